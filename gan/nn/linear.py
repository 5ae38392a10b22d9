"""Linear layer, forward and backward side by side."""

from __future__ import annotations

import asyncio

from gan.nn import functional as F
from gan.nn.module import ProductLayer, Tensor, unwanted


class Linear(ProductLayer):
    """y = x W^T + b for x of shape (batch, in)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__(weight, bias)

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        self._x = x
        return await F.linear(x, self.weight.data, self._bias(), frac_bits)

    async def backward(self, grad: Tensor, frac_bits: int | None = None, input_grad: bool = True) -> Tensor | None:
        """dx = dy W, dW = dy^T x, db = sum of dy over the batch."""
        assert self._x is not None, "backward before forward"
        bits = self._grad_bits(grad)
        dx, dw, _ = await asyncio.gather(F.matmul(grad, self.weight.data, bits) if input_grad else unwanted(),
                                         F.matmul(grad.t(), self._x, bits) if self.weight.requires_grad else unwanted(),
                                         self._bias_grad(grad, (0,)))  # one round
        if dw is not None:
            self.weight.accumulate(dw)
        return dx
