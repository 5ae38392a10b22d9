"""BatchNorm2d with trainable gamma and beta, running statistics kept (as shares when secure)."""

from __future__ import annotations

from typing import Any

from gan.nn import functional as F
from gan.nn.module import (
    Module,
    Parameter,
    TakesUntruncated,
    TakesUntruncatedGradient,
    Tensor,
    Untruncated,
    UntruncatedOutput,
)
from mpcrt import ArithmeticShare

UNTRUNCATED = 1 << 10  # more fractional bits than the output has: ops.batch_norm then skips its truncation


class BatchNorm2d(UntruncatedOutput, TakesUntruncated, TakesUntruncatedGradient):
    """On shares it takes a product's output untruncated (in training truncated in the means'
    round, ops.batch_norm_with_context) and hands its own over untruncated to an activation."""

    def __init__(self, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                 momentum: float = 0.1, eps: float = 1e-5) -> None:
        self.weight, self.bias = Parameter(weight), Parameter(bias)
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps
        self._ctx: Any = None

    def copy(self, statistics: str = "shared") -> Module:
        clone = super().copy(statistics)
        if statistics == "own":
            clone.running_mean, clone.running_var = _duplicate(self.running_mean), _duplicate(self.running_var)
        elif statistics == "none":
            clone.running_mean = clone.running_var = None
        elif statistics != "shared":
            raise ValueError(f"statistics must be 'shared', 'own' or 'none', got {statistics!r}")
        return clone

    def adopt_statistics(self, other: Module) -> None:
        assert isinstance(other, BatchNorm2d)
        for mine, theirs in ((self.running_mean, other.running_mean), (self.running_var, other.running_var)):
            if isinstance(mine, ArithmeticShare):
                mine.value, mine.opening = theirs.value, theirs.opening
            elif mine is not None:
                mine.copy_(theirs)

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        """frac_bits (shares): x is a product's untruncated output standing for that scale."""
        return await self._normalized(x, frac_bits, None)

    async def forward_untruncated(self, x: ArithmeticShare, frac_bits: int | None = None) -> Untruncated:
        """The output before its truncation, to be truncated to the scale x stands for."""
        return Untruncated(await self._normalized(x, frac_bits, UNTRUNCATED),
                           x.frac_bits if frac_bits is None else frac_bits)

    async def _normalized(self, x: Tensor, x_bits: int | None, out_bits: int | None) -> Tensor:
        done = await F.batch_norm(x, self.running_mean, self.running_var, self.weight.data, self.bias.data,
                                  self.training, self.momentum, self.eps, out_bits, x_bits)
        self._ctx = done.saved
        return done.output

    def adopt_truncated_output(self, output: ArithmeticShare) -> None:
        """The output as the next layer truncated it (masked): the backward's k (x - mean) is
        then k1 (y - beta), a product fewer (ops.batch_norm_backward)."""
        if self._ctx is not None and getattr(self._ctx, "training", False):
            self._ctx.output = output

    async def backward(self, grad: Tensor, frac_bits: int | None = None) -> Tensor:
        """The closed form: gradients of the input, gamma and beta. frac_bits (shares): grad
        is handed over untruncated, standing for that scale (truncated in its opening)."""
        assert self._ctx is not None, "backward before forward"
        dx, d_weight, d_bias = await F.batch_norm_backward(grad, self._ctx, frac_bits)
        self.weight.accumulate(d_weight)
        self.bias.accumulate(d_bias)
        return dx


def _duplicate(statistic: Any) -> Any:
    """An independent copy of a running statistic (a share, a tensor or None)."""
    if isinstance(statistic, ArithmeticShare):
        return ArithmeticShare(statistic.party, statistic.value.clone(), statistic.frac_bits, statistic.dtype,
                               statistic.opening)
    return None if statistic is None else statistic.clone()
