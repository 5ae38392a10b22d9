"""The operations layers are written with, on shares (mpcrt.ops) or on plain tensors.

Each function dispatches on its first argument: an ArithmeticShare runs the protocol, a
torch.Tensor runs the same formula in plaintext. So a layer's forward and backward are
one piece of code, and the plaintext run tells a wrong gradient formula (it disagrees
with autograd) from a protocol error (the secure run disagrees with the plaintext one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mpcrt import ArithmeticShare, ops
from mpcrt.ops.products import public_scale
from mpcrt.shares import cat

Tensor = ArithmeticShare | torch.Tensor


def _secure(x: Any) -> bool:
    return isinstance(x, ArithmeticShare)


def product_scales(x: ArithmeticShare, weight: Tensor, stands_for: int | None = None) -> tuple[int, int]:
    """(the untruncated product's scale, the scale a product truncates to) of x and a weight,
    shared or plain (a plain float weight is encoded at the party's scale, an integer one at 0).
    stands_for: the scale an untruncated x stands for (the larger of it and the weight's)."""
    fw = weight.frac_bits if isinstance(weight, ArithmeticShare) else public_scale(weight, x.party)
    return x.frac_bits + fw, max(x.frac_bits if stands_for is None else stands_for, fw)


async def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, frac_bits: int | None = None, **kw: Any) -> Tensor:
    """frac_bits (shares only): the output's scale, as in ops.conv2d."""
    if _secure(x) or _secure(weight):
        return await ops.conv2d(x, weight, bias, frac_bits=frac_bits, **kw)
    return F.conv2d(x, weight, bias, **kw)


async def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None, frac_bits: int | None = None,
                           **kw: Any) -> Tensor:
    if _secure(x) or _secure(weight):
        return await ops.conv_transpose2d(x, weight, bias, frac_bits=frac_bits, **kw)
    return F.conv_transpose2d(x, weight, bias, **kw)


async def linear(x: Tensor, weight: Tensor, bias: Tensor | None, frac_bits: int | None = None) -> Tensor:
    if _secure(x) or _secure(weight):
        return await ops.linear(x, weight, bias, frac_bits=frac_bits)
    return F.linear(x, weight, bias)


async def matmul(a: Tensor, b: Tensor, frac_bits: int | None = None) -> Tensor:
    if _secure(a) or _secure(b):
        return await ops.matmul(a, b, frac_bits=frac_bits)
    return a @ b


async def mul(a: Tensor, b: Tensor, frac_bits: int | None = None) -> Tensor:
    if _secure(a) or _secure(b):
        return await ops.mul(a, b, frac_bits=frac_bits)
    return a * b


async def conv2d_weight_grad(x: Tensor, grad_out: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                             padding: tuple[int, int], dilation: tuple[int, int], frac_bits: int | None = None
                             ) -> Tensor:
    """d(conv2d(x, W))/dW for groups = 1: a convolution of x with the output gradient, roles
    of batch and channels swapped, stride and dilation swapped, cropped to the kernel.
    frac_bits (shares): the result's scale (default the larger operand's). Both operands
    shares: truncated after the swap and the crop, so the gradient is a truncation's output,
    public up to a mask (an optimizer squares it locally)."""
    kw = {"stride": dilation, "padding": padding, "dilation": stride}
    if not (_secure(x) and _secure(grad_out)):
        full = await conv2d(x.transpose(0, 1), grad_out.transpose(0, 1), None, frac_bits, **kw)
        return full.transpose(0, 1)[:, :, :kernel[0], :kernel[1]]
    target = max(x.frac_bits, grad_out.frac_bits) if frac_bits is None else frac_bits
    full = await conv2d(x.transpose(0, 1), grad_out.transpose(0, 1), None, x.frac_bits + grad_out.frac_bits, **kw)
    return await rescale(full.transpose(0, 1)[:, :, :kernel[0], :kernel[1]], target)


@dataclass(frozen=True)
class Forward:
    """An op's output and what its backward needs: on shares the op's own record (an
    ops.ReluDerivative, an ops.BatchNormContext), in plaintext the tensors."""

    output: Tensor
    saved: Any
    truncated_input: Tensor | None = None  # shares: x as the op truncated it, where it did (masked)


async def relu(x: Tensor, frac_bits: int | None = None) -> Forward:
    """max(x, 0) and its derivative. frac_bits (shares only): x is untruncated, to be
    truncated to frac_bits while its sign is taken."""
    if _secure(x):
        done = await ops.relu_with_derivative(x, frac_bits=frac_bits)
        return Forward(done.output, done.derivative, done.truncated_input)
    d = (x >= 0).to(x.dtype)
    return Forward(x * d, d)


async def leaky_relu(x: Tensor, slope: float, frac_bits: int | None = None, untruncated: bool = False) -> Forward:
    """untruncated (shares): the output before its truncation, for a product to truncate."""
    if _secure(x):
        done = await ops.leaky_relu_with_derivative(x, slope, frac_bits=frac_bits, untruncated=untruncated)
        return Forward(done.output, done.derivative, done.truncated_input)
    s = torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, slope))
    return Forward(x * s, s)


async def relu_backward(grad: Tensor, saved: Any, untruncated: bool = False) -> Tensor:
    """grad times the local derivative that relu / leaky_relu saved; untruncated as in
    ops.relu_backward (shares only)."""
    if isinstance(saved, ops.ReluDerivative):
        return await ops.relu_backward(grad, saved, untruncated)
    return await mul(grad, saved)


async def sigmoid(x: Tensor, frac_bits: int | None = None) -> Tensor:
    """frac_bits (shares): x is an untruncated output, truncated while its segment is found."""
    return await ops.sigmoid(x, frac_bits=frac_bits) if _secure(x) else torch.sigmoid(x)


async def tanh(x: Tensor, frac_bits: int | None = None) -> Tensor:
    """frac_bits: as sigmoid's."""
    return await ops.tanh(x, frac_bits=frac_bits) if _secure(x) else torch.tanh(x)


async def sigmoid_derivative(y: Tensor) -> Tensor:
    """sigmoid' from the output y: y (1 - y)."""
    return await ops.sigmoid_derivative(y) if _secure(y) else y * (1 - y)


async def tanh_derivative(y: Tensor) -> Tensor:
    """tanh' from the output y: 1 - y^2."""
    return await ops.tanh_derivative(y) if _secure(y) else 1 - y * y


async def batch_norm(x: Tensor, running_mean: Any, running_var: Any, weight: Any, bias: Any, training: bool,
                     momentum: float, eps: float, frac_bits: int | None = None,
                     x_frac_bits: int | None = None) -> Forward:
    """The output and the context for batch_norm_backward; frac_bits and x_frac_bits as in
    ops.batch_norm (shares only)."""
    if _secure(x):
        done = await ops.batch_norm_with_context(x, running_mean, running_var, weight, bias, training, momentum, eps,
                                                 frac_bits=frac_bits, x_frac_bits=x_frac_bits)
        return Forward(done.output, done.context)
    dims = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(dim=dims, keepdim=True), x.var(dim=dims, unbiased=False, keepdim=True)
        n = x.numel() // x.shape[1]
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1))
            running_var.mul_(1 - momentum).add_(momentum * var.reshape(-1) * n / max(n - 1, 1))
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    inv_std = torch.rsqrt(var + eps)
    x_hat = (x - mean) * inv_std
    y = x_hat if weight is None else x_hat * weight.reshape(shape)
    y = y if bias is None else y + bias.reshape(shape)
    return Forward(y, PlainBatchNormContext(x_hat, inv_std, weight, x.numel() // x.shape[1], training))


@dataclass(frozen=True)
class PlainBatchNormContext:
    """What the plaintext batch norm's backward needs (the secure one keeps an ops.BatchNormContext)."""

    x_hat: torch.Tensor
    inv_std: torch.Tensor
    weight: torch.Tensor | None
    count: int
    training: bool


async def batch_norm_backward(grad: Tensor, ctx: Any, frac_bits: int | None = None) -> tuple[Tensor, Any, Any]:
    """(input gradient, weight gradient, bias gradient), the closed form of the secure op;
    frac_bits as in ops.batch_norm_backward (shares only)."""
    if _secure(grad):
        return await ops.batch_norm_backward(grad, ctx, frac_bits)
    x_hat, inv_std, weight, n, training = ctx.x_hat, ctx.inv_std, ctx.weight, ctx.count, ctx.training
    dims = (0, *range(2, grad.ndim))
    shape = (1, -1) + (1,) * (grad.ndim - 2)
    d_xhat = grad if weight is None else grad * weight.reshape(shape)
    d_weight = None if weight is None else (grad * x_hat).sum(dim=dims)
    d_bias = grad.sum(dim=dims)
    if not training:
        return d_xhat * inv_std, d_weight, d_bias
    inner = n * d_xhat - d_xhat.sum(dim=dims, keepdim=True) - x_hat * (d_xhat * x_hat).sum(dim=dims, keepdim=True)
    return inner * inv_std / n, d_weight, d_bias


async def scale(x: Tensor, factor: float, frac_bits: int | None = None, bound: float | None = None,
                exponent: int | None = None, scale_bits: int | None = None) -> Tensor:
    """x times a public real; on shares the result may keep more fractional bits, a
    promised bound on |x| saves a round, a fixed exponent keeps a drifting factor's steps
    alike, and fewer `scale_bits` leave a large x room in the ring (ops.scale)."""
    if not _secure(x):
        return x * factor
    return await ops.scale(x, factor, frac_bits=frac_bits, bound=bound, exponent=exponent,
                           **({} if scale_bits is None else {"scale_bits": scale_bits}))


async def square(x: Tensor) -> Tensor:
    """x * x at x's scale (one opening on shares)."""
    return await ops.square(x) if _secure(x) else x * x


async def open_masked(x: Tensor) -> Tensor:
    """On shares, x public up to a mask the dealer knows (one round, ops.open_masked): its
    later products open nothing; opened early, off the critical path. Plain: x."""
    return await ops.open_masked(x) if _secure(x) else x


async def square_fine(x: Tensor) -> Tensor:
    """x * x; on shares kept untruncated at twice the scale (small squares stay nonzero)."""
    return await ops.mul(x, x, frac_bits=2 * x.frac_bits) if _secure(x) else x * x


async def rescale(x: Tensor, frac_bits: int) -> Tensor:
    """On shares, change the fixed-point scale (truncating or lifting); plain: unchanged."""
    if not _secure(x) or x.frac_bits == frac_bits:
        return x
    if x.frac_bits > frac_bits:
        return await ops.truncate(x, x.frac_bits - frac_bits)
    return x.derived(x.value << (frac_bits - x.frac_bits), frac_bits)


def flat_cat(xs: list[Tensor]) -> Tensor:
    """All elements of xs in one flat tensor, in order (local); `split_flat` undoes it."""
    if _secure(xs[0]):
        return cat([x.reshape(-1) for x in xs])
    return torch.cat([x.reshape(-1) for x in xs])


def split_flat(flat: Tensor, shapes: list[torch.Size]) -> list[Tensor]:
    """The pieces of a `flat_cat` of tensors of these shapes (local)."""
    out, start = [], 0
    for shape in shapes:
        stop = start + shape.numel()
        out.append(flat[start:stop].reshape(shape))
        start = stop
    return out


async def inv_sqrt(x: Tensor, refine: bool = True, exponents: tuple[int, int] | None = None,
                   times: Tensor | None = None, frac_bits: int | None = None) -> Tensor:
    """1/sqrt(x), or times/sqrt(x) (in the same rounds on shares); on shares over
    [2^lo, 2^(hi+1)) for (lo, hi) = exponents, by default [2^-14, 2^14) (covers [1e-4,
    1e4]; clipped outside, see mpcrt.ops.roots), the result at frac_bits (default x's).
    refine=False: within 4e-3 relative on shares, two rounds fewer (exact in plaintext)."""
    if not _secure(x):
        return torch.rsqrt(x) if times is None else times * torch.rsqrt(x)
    return await ops.inv_sqrt(x, refine=refine, times=times, frac_bits=frac_bits,
                              **({} if exponents is None else {"exponents": exponents}))
