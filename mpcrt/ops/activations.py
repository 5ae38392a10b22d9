"""ReLU and LeakyReLU with what their backward needs.

Forward: d = [x >= 0] from the exact comparison (as integer shares), then y = x * d by a
Beaver product with an integer operand (no truncation). LeakyReLU multiplies by
s = slope + (1 - slope) * d, a fixed-point share computed locally from d, so it costs one
truncation more than ReLU. Backward multiplies the incoming gradient by the stored d (or s).
"""

from __future__ import annotations

from dataclasses import dataclass

from mpcrt import ring
from mpcrt.ops.compare import is_non_negative
from mpcrt.ops.products import mul
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare


@dataclass
class Mask:
    """What a ReLU-family forward keeps for its backward: the local derivative, shared."""

    derivative: ArithmeticShare


async def relu(x: ArithmeticShare, method: str | None = None) -> tuple[ArithmeticShare, Mask]:
    """max(x, 0), and the mask d = [x >= 0] for the backward (relu'(0) taken as 1, y(0) = 0)."""
    with op_label("relu"):
        d = await is_non_negative(x, method)
        return await mul(x, d), Mask(d)


async def leaky_relu(x: ArithmeticShare, negative_slope: float = 0.01,
                     method: str | None = None) -> tuple[ArithmeticShare, Mask]:
    """x if x >= 0 else negative_slope * x, and the derivative s for the backward."""
    with op_label("leaky_relu"):
        d = await is_non_negative(x, method)
        f = x.party.frac_bits
        slope = ring.encode_constant(negative_slope, f)
        # s = slope + d * (1 - slope) in fixed point, exactly 1 where d = 1; local
        s = ArithmeticShare(x.party, d.value * ((1 << f) - slope), f, x.dtype)
        if x.party.id == 0:
            s = ArithmeticShare(x.party, s.value + slope, f, x.dtype)
        return await mul(x, s), Mask(s)


async def backward(grad_out: ArithmeticShare, mask: Mask) -> ArithmeticShare:
    """Gradient of the input: grad_out times the stored local derivative."""
    with op_label("relu_backward"):
        return await mul(grad_out, mask.derivative)
