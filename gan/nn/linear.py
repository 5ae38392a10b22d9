"""Linear layer, forward and backward side by side."""

from __future__ import annotations

from gan.nn import functional as F
from gan.nn.module import ProductLayer, Tensor


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
        x = self._x
        return await self._gradients(grad, (0,), lambda: F.matmul(grad, self.weight.data, bits),  # one round
                                     lambda: F.matmul(grad.t(), x, bits), input_grad)
