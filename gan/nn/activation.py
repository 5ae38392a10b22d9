"""ReLU, LeakyReLU, Sigmoid, Tanh, Square: forward keeps what backward needs."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from gan.nn import functional as F
from gan.nn.module import (
    HANDED_BITS,
    Module,
    Tensor,
    TruncatingActivation,
    Untruncated,
    UntruncatedGradient,
    UntruncatedOutput,
)
from mpcrt import ArithmeticShare


class ReLU(TruncatingActivation):
    def __init__(self) -> None:
        super().__init__()
        self._d: Any = None  # an ops.ReluDerivative on shares, the derivative in plaintext

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        """frac_bits (shares): x is an untruncated output, truncated here while its sign is taken."""
        done = await F.relu(x, frac_bits)
        self._d, self.truncated_input = done.saved, done.truncated_input
        return done.output

    async def backward(self, grad: Tensor) -> Tensor:
        assert self._d is not None, "backward before forward"
        return await F.relu_backward(grad, self._d)


class LeakyReLU(ReLU, UntruncatedOutput, UntruncatedGradient):
    """Its output is slope x + (1 - slope) relu(x), truncated once: handed over before that
    truncation to a product, which truncates it in its own round (its 3f bits must fit:
    f <= 16), one round less. Its backward's product slope g + (1 - slope) d g likewise, to
    a product or batch norm before it."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        done = await F.leaky_relu(x, self.negative_slope, frac_bits)
        self._d, self.truncated_input = done.saved, done.truncated_input
        return done.output

    async def forward_untruncated(self, x: ArithmeticShare, frac_bits: int | None = None) -> Untruncated:
        scale = x.frac_bits if frac_bits is None else frac_bits
        done = await F.leaky_relu(x, self.negative_slope, frac_bits, untruncated=3 * scale <= HANDED_BITS)
        self._d, self.truncated_input = done.saved, done.truncated_input
        return Untruncated(done.output, scale)

    def untruncated_gradient_bits(self, grad: ArithmeticShare) -> int:
        return grad.frac_bits + (self._d.frac_bits if self.negative_slope else 0)

    async def backward_untruncated(self, grad: ArithmeticShare) -> Untruncated:
        assert self._d is not None, "backward before forward"
        return Untruncated(await F.relu_backward(grad, self._d, untruncated=True), grad.frac_bits)


class _SavedOutput(TruncatingActivation, UntruncatedGradient):
    """An activation whose derivative is a function of its output; subclasses name both.
    On shares it takes an untruncated input as ReLU does (its segments read it exactly).
    The derivative needs nothing but the output, so `prepare_backward` makes it beside
    other work (a training step: beside D's forward) and the backward is one product, whose
    truncation a product layer before it takes (its own round): no round of its own."""

    function: staticmethod
    derivative_of_output: staticmethod

    def __init__(self) -> None:
        super().__init__()
        self._y: Tensor | None = None
        self._derivative: Tensor | None = None  # of the last forward's output, once made

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        self._y, self._derivative = await self.function(x, frac_bits), None
        return self._y

    def prepare_backward(self) -> Awaitable[object] | None:
        return self._made_derivative() if self.training and self._y is not None else None

    async def _made_derivative(self) -> Tensor:
        assert self._y is not None, "backward before forward"
        if self._derivative is None:
            self._derivative = await self.derivative_of_output(self._y)
        return self._derivative

    async def backward(self, grad: Tensor) -> Tensor:
        return await F.mul(grad, await self._made_derivative())

    def untruncated_gradient_bits(self, grad: ArithmeticShare) -> int:
        assert self._y is not None, "backward before forward"
        return grad.frac_bits + self._y.frac_bits  # the derivative keeps the output's scale

    async def backward_untruncated(self, grad: ArithmeticShare) -> Untruncated:
        derivative = await self._made_derivative()
        product = await F.mul(grad, derivative, frac_bits=grad.frac_bits + derivative.frac_bits)
        return Untruncated(product, grad.frac_bits)


class Sigmoid(_SavedOutput):
    function = staticmethod(F.sigmoid)
    derivative_of_output = staticmethod(F.sigmoid_derivative)


class Tanh(_SavedOutput):
    function = staticmethod(F.tanh)
    derivative_of_output = staticmethod(F.tanh_derivative)


class Square(Module):
    """x^2, the activation of SecureML and CryptoNets (one product, no comparison)."""

    def __init__(self) -> None:
        self._x: Tensor | None = None

    async def forward(self, x: Tensor) -> Tensor:
        self._x = x
        return await F.square(x)

    async def backward(self, grad: Tensor) -> Tensor:
        assert self._x is not None, "backward before forward"
        return await F.mul(grad, await F.scale(self._x, 2.0))
