"""ReLU, LeakyReLU, Sigmoid, Tanh: forward keeps what backward needs."""

from __future__ import annotations

from gan.nn import functional as F
from gan.nn.module import Module, Tensor


class ReLU(Module):
    def __init__(self) -> None:
        self._d: Tensor | None = None

    async def forward(self, x: Tensor) -> Tensor:
        y, self._d = await F.relu(x)
        return y

    async def backward(self, grad: Tensor) -> Tensor:
        assert self._d is not None, "backward before forward"
        return await F.mul(grad, self._d)


class LeakyReLU(ReLU):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    async def forward(self, x: Tensor) -> Tensor:
        y, self._d = await F.leaky_relu(x, self.negative_slope)
        return y


class Sigmoid(Module):
    def __init__(self) -> None:
        self._y: Tensor | None = None

    async def forward(self, x: Tensor) -> Tensor:
        self._y = await F.sigmoid(x)
        return self._y

    async def backward(self, grad: Tensor) -> Tensor:
        assert self._y is not None, "backward before forward"
        return await F.sigmoid_backward(grad, self._y)


class Tanh(Module):
    def __init__(self) -> None:
        self._y: Tensor | None = None

    async def forward(self, x: Tensor) -> Tensor:
        self._y = await F.tanh(x)
        return self._y

    async def backward(self, grad: Tensor) -> Tensor:
        assert self._y is not None, "backward before forward"
        return await F.tanh_backward(grad, self._y)
