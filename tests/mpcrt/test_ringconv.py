"""The int64 convolutions equal torch's bit for bit, wrapping mod 2^64 included."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mpcrt import ringconv

GEN = torch.Generator().manual_seed(0)


def ring(*shape: int) -> torch.Tensor:
    return torch.randint(-2 ** 63, 2 ** 63 - 1, shape, generator=GEN)


CASES = list(itertools.product([(2, 3, 7, 9, 4, 3), (3, 2, 8, 8, 5, 4), (1, 1, 5, 6, 2, 1)],
                               [1, 2, (1, 2)], [0, 1, (2, 1)], [1, 2]))


@pytest.mark.parametrize(("dims", "stride", "padding", "dilation"), CASES)
def test_conv_transpose2d_matches_torch(dims, stride, padding, dilation):
    n, c, h, w, o, k = dims
    x, weight, bias = ring(n, c, h, w), ring(c, o, k, k), ring(o)
    for output_padding in (0, 1):
        try:
            want = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, 1, dilation)
        except RuntimeError:  # output padding must be smaller than stride or dilation
            continue
        got = ringconv.conv_transpose2d(x, weight, bias, stride, padding, output_padding, 1, dilation)
        assert torch.equal(got, want)


@pytest.mark.parametrize(("dims", "stride", "padding", "dilation"), CASES)
def test_conv2d_by_matrix_product_matches_torch(monkeypatch, dims, stride, padding, dilation):
    monkeypatch.setattr(ringconv, "MIN_MATMUL_REDUCTION", 0)  # the im2col path even for small kernels
    n, c, h, w, o, k = dims
    x, weight, bias = ring(n, c, h, w), ring(o, c, k, k), ring(o)
    try:
        want = F.conv2d(x, weight, bias, stride, padding, dilation)
    except RuntimeError:  # kernel larger than the padded input
        return
    assert torch.equal(ringconv.conv2d(x, weight, bias, stride, padding, dilation), want)


def test_long_reductions_take_the_matrix_product_and_others_torch(monkeypatch):
    calls, torch_conv2d = [], F.conv2d
    monkeypatch.setattr(ringconv.F, "conv2d", lambda *a, **k: calls.append(a[1].shape) or torch_conv2d(*a, **k))
    x = ring(2, 80, 5, 5)
    ringconv.conv2d(x, ring(3, 80, 4, 4))  # 1280 terms per output: matrix product
    ringconv.conv2d(x, ring(3, 80, 3, 3))  # 720: torch
    ringconv.conv2d(x.double(), ring(3, 80, 4, 4).double())  # not ring elements: torch
    assert calls == [(3, 80, 3, 3), (3, 80, 4, 4)]
