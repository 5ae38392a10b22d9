"""Linear layer, forward and backward side by side."""

from __future__ import annotations

from gan.nn import functional as F
from gan.nn.module import Module, Parameter, Tensor


class Linear(Module):
    """y = x W^T + b for x of shape (batch, in)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        self.weight = Parameter(weight)
        self.bias = Parameter(bias) if bias is not None else None
        self._x: Tensor | None = None

    async def forward(self, x: Tensor) -> Tensor:
        self._x = x
        y = await F.matmul(x, self.weight.data.t())
        return y if self.bias is None else y + self.bias.data

    async def backward(self, grad: Tensor) -> Tensor:
        """dx = dy W, dW = dy^T x, db = sum of dy over the batch."""
        assert self._x is not None, "backward before forward"
        dx = await F.matmul(grad, self.weight.data)
        self.weight.accumulate(await F.matmul(grad.t(), self._x))
        if self.bias is not None:
            self.bias.accumulate(grad.sum(dim=0))
        return dx
