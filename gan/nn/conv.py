"""Conv2d and ConvTranspose2d (groups = 1), forward and backward side by side."""

from __future__ import annotations

from gan.nn import functional as F
from gan.nn.module import ProductLayer, Tensor


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class _Conv(ProductLayer):
    def __init__(self, weight: Tensor, bias: Tensor | None, stride, padding, dilation) -> None:
        super().__init__(weight, bias)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:])  # type: ignore[return-value]



class Conv2d(_Conv):
    """y = conv2d(x, W) + b."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1) -> None:
        super().__init__(weight, bias, stride, padding, dilation)

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        self._x = x
        return await F.conv2d(x, self.weight.data, self._bias(), frac_bits, stride=self.stride, padding=self.padding,
                              dilation=self.dilation)

    async def backward(self, grad: Tensor, frac_bits: int | None = None, input_grad: bool = True) -> Tensor | None:
        """dx = conv_transpose2d(dy, W) (output padding restores x's size); dW by correlation."""
        x = self._x
        assert x is not None, "backward before forward"
        out_padding = tuple(
            x.shape[2 + i] - ((grad.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                              + self.dilation[i] * (self.kernel[i] - 1) + 1) for i in range(2))
        bits = self._grad_bits(grad)
        return await self._gradients(
            grad, (0, 2, 3),
            lambda: F.conv_transpose2d(grad, self.weight.data, None, bits, stride=self.stride, padding=self.padding,
                                       output_padding=out_padding, dilation=self.dilation),
            lambda: F.conv2d_weight_grad(x, grad, self.kernel, self.stride, self.padding, self.dilation, bits),
            input_grad)


class ConvTranspose2d(_Conv):
    """y = conv_transpose2d(x, W) + b (W of shape in x out x kh x kw)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, output_padding=0,
                 dilation=1) -> None:
        super().__init__(weight, bias, stride, padding, dilation)
        self.output_padding = _pair(output_padding)

    async def forward(self, x: Tensor, frac_bits: int | None = None) -> Tensor:
        self._x = x
        return await F.conv_transpose2d(x, self.weight.data, self._bias(), frac_bits, stride=self.stride,
                                        padding=self.padding, output_padding=self.output_padding,
                                        dilation=self.dilation)

    async def backward(self, grad: Tensor, frac_bits: int | None = None, input_grad: bool = True) -> Tensor | None:
        """The adjoint of conv2d: dx = conv2d(dy, W); dW = the conv2d weight gradient with the
        roles of input and output gradient exchanged."""
        x = self._x
        assert x is not None, "backward before forward"
        bits = self._grad_bits(grad)
        dx = await self._gradients(
            grad, (0, 2, 3),
            lambda: F.conv2d(grad, self.weight.data, None, bits, stride=self.stride, padding=self.padding,
                             dilation=self.dilation),
            lambda: F.conv2d_weight_grad(grad, x, self.kernel, self.stride, self.padding, self.dilation, bits),
            input_grad)
        if dx is not None and dx.shape[2:] != x.shape[2:]:  # a crop makes a new share: the mask stays only uncropped
            dx = dx[:, :, :x.shape[2], :x.shape[3]]
        return dx
