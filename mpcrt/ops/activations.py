"""ReLU and LeakyReLU with what their backward needs.

Forward: the sign bit of x by the comparison (packed XOR shares), then x * [x >= 0] and
the bit as ring shares in one round together (`ops.boolean.mul_bit`: the bit is opened
under a random bit, x under a mask unless it is a truncation's output already): ReLU
needs no truncation. LeakyReLU is slope * x + (1 - slope) * relu(x), one truncation more.
With the DCF method the comparison gives the bit as ring shares, and a Beaver product
follows. Backward multiplies the incoming gradient by the stored bit the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpcrt import ring
from mpcrt.binary import BinaryShare
from mpcrt.ops.boolean import mul_bit
from mpcrt.ops.compare import _resolve, is_non_negative, msb
from mpcrt.ops.products import mul
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare


@dataclass
class Mask:
    """What a ReLU-family forward keeps for its backward: the local derivative, shared
    (and the bit [x >= 0] packed, when the comparison gave it so)."""

    derivative: ArithmeticShare
    bits: BinaryShare | None = None
    negative_slope: float = 0.0


async def _times_step(x: ArithmeticShare, method: str | None) -> tuple[ArithmeticShare, ArithmeticShare,
                                                                     BinaryShare | None]:
    """(x * [x >= 0], [x >= 0] as ring shares, the bit packed or None)."""
    if _resolve(x, method) == "dcf":
        d = await is_non_negative(x, "dcf")
        return await mul(x, d), d, None
    bits = ~await msb(x, method)
    y, d = await mul_bit(x, bits)
    return y, d, bits


def _leaky(x: ArithmeticShare, positive: ArithmeticShare, slope: float):
    """slope * x + (1 - slope) * positive, one truncation (positive = x * [x >= 0])."""
    f = x.frac_bits
    raw = x.value * ring.encode_constant(slope, f) + positive.value * ring.encode_constant(1 - slope, f)
    return truncate(x._with(raw, 2 * f), f)


async def relu(x: ArithmeticShare, method: str | None = None) -> tuple[ArithmeticShare, Mask]:
    """max(x, 0), and the mask d = [x >= 0] for the backward (relu'(0) taken as 1, y(0) = 0)."""
    with op_label("relu"):
        y, d, bits = await _times_step(x, method)
        return y, Mask(d, bits)


async def leaky_relu(x: ArithmeticShare, negative_slope: float = 0.01,
                     method: str | None = None) -> tuple[ArithmeticShare, Mask]:
    """x if x >= 0 else negative_slope * x, and the derivative s for the backward."""
    with op_label("leaky_relu"):
        positive, d, bits = await _times_step(x, method)
        f = x.frac_bits
        slope = ring.encode_constant(negative_slope, f)
        # s = slope + d * (1 - slope) in fixed point, exactly 1 where d = 1; local
        s = ArithmeticShare(x.party, d.value * ((1 << f) - slope), f, x.dtype)
        if x.party.id == 0:
            s = ArithmeticShare(x.party, s.value + slope, f, x.dtype)
        return await _leaky(x, positive, negative_slope), Mask(s, bits, negative_slope)


async def backward(grad_out: ArithmeticShare, mask: Mask) -> ArithmeticShare:
    """Gradient of the input: grad_out times the stored local derivative."""
    with op_label("relu_backward"):
        if mask.bits is None:
            return await mul(grad_out, mask.derivative)
        positive, _ = await mul_bit(grad_out, mask.bits)
        return positive if not mask.negative_slope else await _leaky(grad_out, positive, mask.negative_slope)
