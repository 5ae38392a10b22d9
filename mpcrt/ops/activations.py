"""ReLU and LeakyReLU, and what their backward needs.

`relu(x)` returns max(x, 0) as F.relu does; `relu_with_derivative(x)` also returns the
derivative the backward multiplies by (`ReluDerivative`), in the same rounds.

Forward: the sign bit of x by the comparison (packed XOR shares), then one round opens
the bit under a dealer bit (`ops.boolean.open_bit`) and x under a mask unless it is a
truncation's output already; x * [x >= 0] and the bit as ring shares are then local
(`times_bit`): ReLU needs no truncation. LeakyReLU is slope * x + (1 - slope) * relu(x),
one truncation more. The backward multiplies the gradient by the same opened bit: no
round at all when the gradient is a truncation's output, as it is after a product. With
the DCF method, ReLU takes one round (`ops.compare.relu_dcf`: the opening of x + r, the
product with the bit local), and the bit comes as ring shares. Where the forward has a
round after the DCF's (the truncation of an untruncated input's product), that round
opens the bit under a mask too, so the backward's product with a masked gradient is
local; otherwise the backward opens the bit (one round).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mpcrt import ring
from mpcrt.ops.boolean import OpenedBit, times_bit, times_opened_bit
from mpcrt.ops.compare import msb, relu_dcf
from mpcrt.ops.policy import resolve_method
from mpcrt.ops.products import mul, open_masked
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, plus_public

if TYPE_CHECKING:
    from mpcrt.runtime import Party


@dataclass
class ReluDerivative:
    """What a ReLU-family forward keeps for its backward: the bit d = [x >= 0], opened under
    a dealer bit (or, with the DCF, as ring shares, masked where the forward had a round to
    open it in), the slope, and the scale of x. The local derivative as a share (d, or
    slope + (1 - slope) d) is made only when asked for: the backward multiplies by the
    opened bit directly."""

    bit: OpenedBit | ArithmeticShare
    negative_slope: float
    party: Party
    frac_bits: int  # x's scale, the leaky derivative's
    dtype: torch.dtype

    @property
    def derivative(self) -> ArithmeticShare:
        """The local derivative as a share (local work)."""
        party, f = self.party, self.frac_bits
        d = self.bit if isinstance(self.bit, ArithmeticShare) else ArithmeticShare.integers(party, self.bit.arith())
        if not self.negative_slope:
            return d
        slope = ring.encode_constant(self.negative_slope, f)
        # s = slope + d * (1 - slope) in fixed point, exactly 1 where d = 1; masked where d is
        rise = (1 << f) - slope
        s = ArithmeticShare(party, plus_public(party.id, d.value * rise, slope), f, self.dtype)
        s.opening = None if d.opening is None else d.opening.affine(rise, slope)
        return s


async def _times_step(x: ArithmeticShare, method: str | None, frac_bits: int | None, keep_x: bool
                      ) -> tuple[ArithmeticShare | None, ArithmeticShare, OpenedBit | ArithmeticShare]:
    """(x truncated to frac_bits if keep_x, x * [x >= 0] at frac_bits, the bit: opened, or ring
    shares from the DCF). x's sign is taken as it is (the truncation keeps it), while x is
    truncated."""
    cut = 0 if frac_bits is None else x.frac_bits - frac_bits
    if cut < 0:
        raise ValueError(f"a share with {x.frac_bits} fractional bits cannot be truncated to {frac_bits}")
    if resolve_method(x, method) == "dcf":  # the product in the opening's round, then its truncation (if any)
        (product, bit), x = await asyncio.gather(relu_dcf(x), truncate(x, cut) if keep_x else asyncio.sleep(0))
        if not cut:  # no round after the DCF's: the backward opens the bit where it needs it
            return x, product, bit
        # the truncation's round opens the bit too (under a mask): the backward's product is local
        product, bit = await asyncio.gather(truncate(product, cut), open_masked(bit))
        return x, product, bit
    sign, x = await asyncio.gather(msb(x, method), truncate(x, cut))
    product, bit = await times_opened_bit(x, ~sign)  # one round
    return x, product, bit


def _truncated(x: ArithmeticShare | None, frac_bits: int | None, before: ArithmeticShare) -> ArithmeticShare | None:
    """x, where the forward truncated it (frac_bits below the input's)."""
    return x if frac_bits is not None and frac_bits < before.frac_bits else None


def _leaky_raw(x: ArithmeticShare, positive: ArithmeticShare, slope: float, bits: int | None = None
               ) -> ArithmeticShare:
    """slope * x + (1 - slope) * positive with the slopes at `bits` (default x's scale),
    untruncated: at x's scale plus `bits` (positive = x * [x >= 0])."""
    bits = x.frac_bits if bits is None else bits
    return x.times(slope, bits) + positive.times(1 - slope, bits)


@dataclass(frozen=True)
class Activation:
    """A ReLU-family forward's output and the derivative its backward multiplies by; and x
    as the forward truncated it, where it did (an untruncated x: a truncation's output, so
    public up to a mask; batch norm's backward reads its own output so, see BatchNormContext)."""

    output: ArithmeticShare
    derivative: ReluDerivative
    truncated_input: ArithmeticShare | None = None


async def relu(x: ArithmeticShare, method: str | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """max(x, 0) (y(0) = 0). frac_bits: x is an untruncated product (e.g. ops.conv2d(...,
    frac_bits=2f)) to truncate to frac_bits: its sign is taken as it is, while it is
    truncated, saving the round."""
    return (await relu_with_derivative(x, method, frac_bits)).output


async def relu_with_derivative(x: ArithmeticShare, method: str | None = None, frac_bits: int | None = None
                               ) -> Activation:
    """relu(x) and the derivative d = [x >= 0] for `backward` (relu'(0) taken as 1), in the
    same rounds: the forward opens d anyway."""
    with op_label("relu"):
        # an untruncated x is kept truncated (with the DCF too, beside its opening: no round),
        # for a batch norm before it whose backward reads its output so
        kept, y, bit = await _times_step(x, method, frac_bits, keep_x=frac_bits is not None)
        return Activation(y, ReluDerivative(bit, 0.0, x.party, y.frac_bits, x.dtype), _truncated(kept, frac_bits, x))


async def leaky_relu(x: ArithmeticShare, negative_slope: float = 0.01, method: str | None = None,
                     frac_bits: int | None = None) -> ArithmeticShare:
    """x if x >= 0 else negative_slope * x (frac_bits: as for relu)."""
    return (await leaky_relu_with_derivative(x, negative_slope, method, frac_bits)).output


async def leaky_relu_with_derivative(x: ArithmeticShare, negative_slope: float = 0.01, method: str | None = None,
                                     frac_bits: int | None = None, untruncated: bool = False) -> Activation:
    """leaky_relu(x) and its derivative s = slope + (1 - slope) [x >= 0] for `backward`.
    untruncated: the output is left before its truncation (at twice the scale), for a
    product that truncates it in its own round."""
    with op_label("leaky_relu"):
        kept, positive, bit = await _times_step(x, method, frac_bits, keep_x=True)
        raw = _leaky_raw(kept, positive, negative_slope)
        return Activation(raw if untruncated else await truncate(raw, kept.frac_bits),
                          ReluDerivative(bit, negative_slope, x.party, kept.frac_bits, x.dtype),
                          _truncated(kept, frac_bits, x))


async def backward(grad_out: ArithmeticShare, derivative: ReluDerivative, untruncated: bool = False
                   ) -> ArithmeticShare:
    """Gradient of the input: grad_out times the derivative the forward kept. untruncated: a
    leaky derivative's product is left before its truncation, at grad_out's scale plus
    `derivative.frac_bits`, for a layer that truncates it in a round it has anyway (a
    product's truncation, batch norm's opening of its gradient): one round less."""
    with op_label("relu_backward"):
        if isinstance(derivative.bit, ArithmeticShare):  # the DCF's bit: a Beaver product
            local = derivative.derivative
            wide = grad_out.frac_bits + local.frac_bits
            return await mul(grad_out, local, frac_bits=wide if untruncated else None)
        positive = await times_bit(await open_masked(grad_out), derivative.bit)  # the forward's opened bit
        if not derivative.negative_slope:
            return positive
        raw = _leaky_raw(grad_out, positive, derivative.negative_slope, derivative.frac_bits)
        return raw if untruncated else await truncate(raw, derivative.frac_bits)
