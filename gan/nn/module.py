"""Layers with async forward and backward, on shares or plain tensors; containers."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import torch

from gan.nn import functional as F
from mpcrt import ArithmeticShare

Tensor = ArithmeticShare | torch.Tensor


async def unwanted() -> None:
    """What a backward gathers in place of a gradient nobody wants."""


class Parameter:
    """A trainable tensor (share or plain) and, after backward, its gradient. Where
    requires_grad is off (torch's flag), a backward makes no gradient for it: a product
    layer skips the product, and nothing accumulates."""

    __slots__ = ("_summed", "data", "grad", "requires_grad")

    def __init__(self, data: Tensor) -> None:
        self.data = data
        self.grad: Tensor | None = None
        self.requires_grad = True
        self._summed: tuple[Tensor, list[Tensor]] | None = None  # (grad, the passes' gradients summed in it)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, {type(self.data).__name__})"

    def accumulate(self, grad: Tensor) -> None:
        """Add to the gradient, as torch does: passes that share parameters sum their gradients."""
        if self.requires_grad:
            parts = [*self.gradient_parts(), grad] if self.grad is not None else [grad]
            self.grad = grad if self.grad is None else self.grad + grad
            self._summed = (self.grad, parts)

    def gradient_parts(self) -> list[Tensor]:
        """The gradients the backward passes made, which grad sums (each a truncation's output,
        public up to a mask, where a product made it: an optimizer may square the sum without
        opening it); [grad] where grad was set otherwise."""
        if self._summed is not None and self._summed[0] is self.grad:
            return list(self._summed[1])
        return [] if self.grad is None else [self.grad]


class Module:
    """Base of every layer. Subclasses set parameters as attributes and define forward and
    backward; backward returns the input's gradient and fills each parameter's .grad."""

    training: bool = True

    async def forward(self, x: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} does not define forward")

    async def backward(self, grad: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} does not define backward")

    async def __call__(self, x: Tensor) -> Tensor:
        return await self.forward(x)

    def prepare_backward(self) -> Awaitable[object] | None:
        """The part of the backward that needs only the last forward's results, started now
        to run beside other work (gan.step: G's, beside D's forward), or None where there is
        none. An awaitable made now (not a coroutine function to await later), so that its
        first messages leave in the same frame as the caller's concurrent work."""
        return None

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for value in vars(self).values():
            if isinstance(value, Module):
                value.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Whether backward makes the parameters' gradients (torch's Module.requires_grad_):
        off for a pass whose gradients would be dropped (D's in the G step)."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def copy(self, statistics: str = "shared") -> Module:
        """Another instance sharing the parameters but with its own saved forward state, so
        concurrent passes (D on real and on fake) do not collide. statistics: the batch-norm
        running statistics "shared", the copy's "own" (see adopt_statistics), or "none" (a
        training pass whose update would be dropped: none is made)."""
        clone = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, Module):
                setattr(clone, name, value.copy(statistics))
        return clone

    def adopt_statistics(self, other: Module) -> None:
        """Take the running statistics of `other` (a copy of this module with its own) as this
        module's, in place. Concurrent passes must not update shared statistics: when each
        party reads and writes them depends on timing, which differs between the parties."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                value.adopt_statistics(getattr(other, name))


@dataclass(frozen=True)
class Untruncated:
    """A layer's output before its truncation, and the scale it is to be truncated to."""

    output: Tensor
    frac_bits: int


class UntruncatedOutput(Module):
    """A layer that can hand its output over before its truncation (products, batch norm,
    LeakyReLU): Sequential gives it so to a following TakesUntruncated layer, which truncates
    it in a round it has anyway, one round less per pair. forward_untruncated(x, frac_bits):
    x may itself be handed over, standing for scale frac_bits."""

    async def forward_untruncated(self, x: ArithmeticShare, frac_bits: int | None = None) -> Untruncated:
        raise TypeError(f"{type(self).__name__} does not define forward_untruncated")

    def adopt_truncated_output(self, output: ArithmeticShare) -> None:
        """The output as the layer it was handed to truncated it (public up to a mask), for a
        backward that can use it (batch norm's); by default unused."""


class TakesUntruncated(Module):
    """A layer whose forward(x, frac_bits) takes x untruncated, standing for scale frac_bits,
    and truncates it where it costs no round: an activation while it compares it, a product
    in its own truncation."""

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        raise TypeError(f"{type(self).__name__} does not define forward")


HANDED_BITS = 48  # a handed-over value's scale at most, and its product's: 3f bits up to f = 16


class UntruncatedGradient(Module):
    """A layer whose backward can hand the input's gradient over before its truncation
    (LeakyReLU: slope g + (1 - slope) d g), to a TakesUntruncatedGradient layer before it,
    which truncates it in a round it has anyway: one round less per pair (Sequential)."""

    def untruncated_gradient_bits(self, grad: ArithmeticShare) -> int:
        """The scale of the gradient backward_untruncated would hand over for `grad`."""
        raise TypeError(f"{type(self).__name__} does not define untruncated_gradient_bits")

    async def backward_untruncated(self, grad: ArithmeticShare) -> Untruncated:
        raise TypeError(f"{type(self).__name__} does not define backward_untruncated")


class TakesUntruncatedGradient(Module):
    """A layer whose backward(grad, frac_bits) takes grad untruncated, standing for scale
    frac_bits, and truncates it where it costs no round: a product in its own truncation,
    batch norm in its opening of the gradient."""

    def takes_gradient_bits(self, bits: int) -> bool:
        """Whether a gradient at scale `bits` fits what this layer's backward computes."""
        return bits <= HANDED_BITS

    async def backward(self, grad: Tensor, frac_bits: int | None = None) -> Tensor:
        raise TypeError(f"{type(self).__name__} does not define backward")


class TruncatingActivation(TakesUntruncated):
    """An activation that takes an untruncated input: forward(x, frac_bits) truncates x to
    frac_bits while it compares it (ReLU, LeakyReLU: its sign; Sigmoid, Tanh: its segment).
    `truncated_input`: x as the last forward truncated it, where it keeps it (ReLU,
    LeakyReLU; a truncation's output), for the layer that handed x over (Sequential)."""

    def __init__(self) -> None:
        self.truncated_input: Tensor | None = None


class ProductLayer(UntruncatedOutput, TakesUntruncated, TakesUntruncatedGradient):
    """A layer whose output is its input times its weight, plus an optional bias (linear,
    convolutions): the parameters, and the output before its truncation that a following
    activation takes (see Sequential). Subclasses' forward takes the output's scale as
    frac_bits, so an untruncated input is truncated in the product's own truncation. The
    backward's products truncate to the weight's scale, whatever scales the gradient (its
    backward's frac_bits, the scale a handed-over gradient stands for, changes nothing) and the
    saved input have (with an untruncated input they carry 3f bits before the truncation:
    the weight's gradient must stay below 2^(62 - 3f))."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight = Parameter(weight)
        self.bias = Parameter(bias) if bias is not None else None
        self._x: Tensor | None = None

    def _bias(self) -> Tensor | None:
        return None if self.bias is None else self.bias.data

    async def forward_untruncated(self, x: ArithmeticShare, frac_bits: int | None = None) -> Untruncated:
        """The output before its truncation (at the sum of x's and the weight's scales)."""
        untruncated, target = F.product_scales(x, self.weight.data, frac_bits)
        return Untruncated(await self.forward(x, untruncated), target)  # type: ignore[call-arg]

    def takes_gradient_bits(self, bits: int) -> bool:
        """Whether the backward's products with a gradient at scale `bits` fit (HANDED_BITS):
        the saved input's scale (itself handed over at 2f, then 4f bits) and the weight's."""
        scales = [t.frac_bits for t in (self._x, self.weight.data) if isinstance(t, ArithmeticShare)]
        return len(scales) == 2 and max(scales) + bits <= HANDED_BITS

    def _grad_bits(self, grad: Tensor) -> int | None:
        """The scale the backward's products truncate to (shares): the weight's, whatever scales
        the gradient (a loss's 1/N read into it, gan.loss) and the saved input have."""
        if not isinstance(grad, ArithmeticShare):
            return None
        weight = self.weight.data
        return weight.frac_bits if isinstance(weight, ArithmeticShare) else grad.party.frac_bits

    async def _gradients(self, grad: Tensor, dims: tuple[int, ...], input_product: Callable[[], Awaitable[Tensor]],
                         weight_product: Callable[[], Awaitable[Tensor]], input_grad: bool) -> Tensor | None:
        """The input's gradient (None unless input_grad), the weight's (accumulated) and the
        bias's, concurrently (they share their rounds); a product nobody wants is not made."""
        dx, dw, _ = await asyncio.gather(input_product() if input_grad else unwanted(),
                                         weight_product() if self.weight.requires_grad else unwanted(),
                                         self._bias_grad(grad, dims))
        if dw is not None:
            self.weight.accumulate(dw)
        return dx

    async def _bias_grad(self, grad: Tensor, dims: tuple[int, ...]) -> None:
        """The bias's gradient, the sum of grad over `dims`, at the weight's scale."""
        if self.bias is None or not self.bias.requires_grad:
            return
        total = grad.sum(dim=dims)
        bits = self._grad_bits(grad)
        if bits is not None and total.frac_bits > bits:
            total = await F.rescale(total, bits)
        self.bias.accumulate(total)


class Sequential(Module):
    """Layers in order; backward runs them in reverse."""

    def __init__(self, *layers: Module) -> None:
        self.layers = list(layers)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for i, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}{i}.")

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    async def forward(self, x: Tensor) -> Tensor:
        """On shares, a layer whose output the next layer (reshapes aside) can take before its
        truncation hands it over so: the taker truncates it in a round it has anyway (an
        activation while it compares it, a product in its own truncation), one round less
        per pair; a layer can take and hand over both (conv -> LeakyReLU -> conv)."""
        stands_for: int | None = None  # x is handed over untruncated, standing for this scale
        hander: Module | None = None  # the layer that handed it over
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Reshape):
                x = await layer.forward(x)
                continue
            after = next((later for later in self.layers[i + 1:] if not isinstance(later, Reshape)), None)
            taken_from, hander = hander, None
            if isinstance(x, ArithmeticShare) and isinstance(layer, UntruncatedOutput) \
                    and isinstance(after, TakesUntruncated):
                handed = await layer.forward_untruncated(x, stands_for)
                x, stands_for, hander = handed.output, handed.frac_bits, layer
            elif stands_for is not None:
                assert isinstance(layer, TakesUntruncated)
                x, stands_for = await layer.forward(x, stands_for), None
            else:
                x = await layer.forward(x)
            truncated = getattr(layer, "truncated_input", None)
            if isinstance(taken_from, UntruncatedOutput) and truncated is not None:
                taken_from.adopt_truncated_output(truncated)  # e.g. batch norm's output, for its backward
        return x

    def prepare_backward(self) -> Awaitable[object] | None:
        pending = [p for p in (layer.prepare_backward() for layer in self.layers) if p is not None]
        return asyncio.gather(*pending) if pending else None

    async def backward(self, grad: Tensor, input_grad: bool = True) -> Tensor | None:
        """input_grad=False: the input's gradient is not wanted (None): a first product layer
        skips its product."""
        return await _backward(self.layers, grad, input_grad=input_grad)

    def copy(self, statistics: str = "shared") -> Module:
        clone = copy.copy(self)
        clone.layers = [layer.copy(statistics) for layer in self.layers]
        return clone

    def adopt_statistics(self, other: Module) -> None:
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            mine.adopt_statistics(theirs)

    async def backward_from_logits(self, grad: Tensor, input_grad: bool = True) -> Tensor | None:
        """Backward with the gradient of the pre-activation of the last layer (a Sigmoid whose
        output fed a cross-entropy: sigma(x) - y is the gradient of its input). A gradient
        finer than the party's scale (gan.loss) goes as it is to a product layer, which
        truncates it in its own truncation; any other layer gets it rescaled."""
        layers = self.layers[:-1]
        if isinstance(grad, ArithmeticShare) and grad.frac_bits > grad.party.frac_bits \
                and not isinstance(_before(layers, len(layers)), ProductLayer):
            grad = await F.rescale(grad, grad.party.frac_bits)
        return await _backward(layers, grad, input_grad=input_grad)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


def _before(layers: list[Module], i: int) -> Module | None:
    """The layer before layers[i], reshapes aside: the next one a backward runs."""
    return next((layer for layer in reversed(layers[:i]) if not isinstance(layer, Reshape)), None)


def _takes_gradient(layer: Module | None, bits: int) -> bool:
    return isinstance(layer, TakesUntruncatedGradient) and layer.takes_gradient_bits(bits)


async def _backward(layers: list[Module], grad: Tensor, stands_for: int | None = None, input_grad: bool = True
                    ) -> Tensor | None:
    """The layers' backward in reverse. On shares, a layer that can hand its input's gradient
    over before its truncation does so where the layer before takes it (a LeakyReLU before a
    product or batch norm), which truncates it in a round it has anyway: one round less per
    pair. stands_for: grad is handed over already, standing for this scale. input_grad=False:
    a first product layer makes no input gradient (None is returned)."""
    first = next((i for i, layer in enumerate(layers) if not isinstance(layer, Reshape)), None)
    for i in reversed(range(len(layers))):
        layer = layers[i]
        if i == first and not input_grad and isinstance(layer, ProductLayer):
            await layer.backward(grad, stands_for, input_grad=False)
            return None
        if isinstance(layer, Reshape):
            grad = await layer.backward(grad)
        elif stands_for is not None:
            assert isinstance(layer, TakesUntruncatedGradient)
            grad, stands_for = await layer.backward(grad, stands_for), None
        elif isinstance(grad, ArithmeticShare) and isinstance(layer, UntruncatedGradient) \
                and _takes_gradient(_before(layers, i), layer.untruncated_gradient_bits(grad)):
            handed = await layer.backward_untruncated(grad)
            grad, stands_for = handed.output, handed.frac_bits
        else:
            grad = await layer.backward(grad)
    return grad


class Reshape(Module):
    """Reshape the non-batch dimensions (Flatten is Reshape(-1))."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape
        self._input_shape: tuple[int, ...] = ()

    async def forward(self, x: Tensor) -> Tensor:
        self._input_shape = tuple(x.shape)
        return x.reshape(x.shape[0], *self.shape)

    async def backward(self, grad: Tensor) -> Tensor:
        return grad.reshape(*self._input_shape)


class Flatten(Reshape):
    def __init__(self) -> None:
        super().__init__(-1)
