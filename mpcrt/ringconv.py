"""Exact convolutions of int64 ring elements (mod 2^64), fast on CPU.

torch's int64 convolutions have no oneDNN path: on DCGAN shapes conv2d runs up to 15x slower
than float32, and conv_transpose2d multiplies small matrices image by image. One large int64
matrix product does the same arithmetic faster (it wraps mod 2^64 like the ring): conv2d as
im2col (Tensor.unfold works for any dtype) times the weight matrix, where the reduction is
long enough to pay for the copy (from C*kh*kw = 1024; below it torch's own kernel stays
faster); conv_transpose2d always as the weight matrix times every image's columns at once,
then col2im as k*k strided additions (timings: docs/BENCHMARKS.md, "Ring convolutions").
Same signatures and results as torch.nn.functional (bit for bit; groups = 1, else torch's
kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_MATMUL_REDUCTION = 1024  # C * kh * kw up to which torch's int64 conv2d is as fast or faster


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """torch.nn.functional.conv2d for int64 tensors: im2col and one matrix product."""
    if (groups != 1 or x.dtype != torch.int64 or isinstance(padding, str)
            or weight[0].numel() <= MIN_MATMUL_REDUCTION):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    padded = F.pad(x, (pw, pw, ph, ph))
    patches = padded.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)[..., ::dh, ::dw]
    oh, ow = patches.shape[2:4]
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    out = (cols @ weight.reshape(o, c * kh * kw).t()).reshape(n, oh, ow, o).permute(0, 3, 1, 2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.contiguous()


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """torch.nn.functional.conv_transpose2d for int64 tensors: one matrix product, then col2im."""
    if groups != 1 or x.dtype != torch.int64:
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation)
    n, cin, h, w = x.shape
    _, cout, kh, kw = weight.shape
    cols = weight.reshape(cin, cout * kh * kw).t() @ x.transpose(0, 1).reshape(cin, n * h * w)
    cols = cols.reshape(cout, kh, kw, n, h, w)
    full_h, full_w = (h - 1) * sh + (kh - 1) * dh + 1 + oph, (w - 1) * sw + (kw - 1) * dw + 1 + opw
    canvas = x.new_zeros(cout, n, full_h, full_w)
    for i in range(kh):
        for j in range(kw):
            canvas[:, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (w - 1) * sw + 1:sw] += cols[:, i, j]
    out = canvas[:, :, ph:full_h - ph, pw:full_w - pw].transpose(0, 1)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.contiguous()
