"""Batch normalization on shares, forward and backward, per channel (dimension 1).

Valid while |x - mean| < 512 (squared at f + 6 bits) and |x_hat| < 64, and var + eps is
in [2^-17, 2^15) (the inverse square root's range here; clipped outside): with eps = 1e-5
the tiny variances of DCGAN's freshly initialised layers (about 1e-5) are covered.

Training: mean (exact sum, precise 1/n), centered x, biased variance, 1/sqrt(var + eps)
(mean, centered values, variance and 1/std carry f + 8 fractional bits: a mean rounded at
2^-f would shift a whole channel, an error that its weight gradient sums n times)
from the range-converted Goldschmidt iteration (on C values only, so cheap), then
x_hat = (x - mean) / std and y = gamma * x_hat + beta with gamma and beta shared (or
public). Running statistics, when given as shares, are updated in place like torch's
(unbiased variance), and used as they are in inference.
Backward (the usual closed form, from what the forward kept):
  dgamma = sum(dy * x_hat), dbeta = sum(dy),
  dx = inv_std / n * (n * dy*gamma - sum(dy*gamma) - x_hat * sum(dy*gamma * x_hat)).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import torch

from mpcrt.ops.products import mean, mul, scale
from mpcrt.ops.roots import inv_sqrt
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

EXTRA_BITS = 12  # mean, variance and 1/std carry f + 12 fractional bits: a variance of 1e-5 is 2,700 units
STD_EXPONENTS = (-17, 14)  # var + eps >= eps = 1e-5 > 2^-17
SQUARE_BITS = 6  # the centered values are squared at f + 6 bits


@dataclass
class BatchNormContext:
    """What the backward needs."""

    x_hat: ArithmeticShare
    inv_std: ArithmeticShare | torch.Tensor  # shape (1, C, 1, ...); a tensor for public statistics
    weight: Any
    count: int
    training: bool


def _per_channel(t: Any, ndim: int) -> Any:
    shape = (1, -1) + (1,) * (ndim - 2)
    return t.reshape(*shape) if isinstance(t, ArithmeticShare) else torch.as_tensor(t).reshape(shape)


def _reduce_dims(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


async def batch_norm(x: ArithmeticShare, running_mean: Any = None, running_var: Any = None, weight: Any = None,
                     bias: Any = None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                     method: str | None = None) -> tuple[ArithmeticShare, BatchNormContext]:
    """torch.nn.functional.batch_norm on shares; also returns the context for the backward."""
    dims = _reduce_dims(x.ndim)
    count = x.numel() // x.shape[1]
    f, fine = x.frac_bits, x.frac_bits + EXTRA_BITS
    with op_label("batch_norm"):
        lifted = x._with(x.value << EXTRA_BITS, fine)  # exact
        if training:
            mu = await mean(x, dim=dims, keepdim=True, frac_bits=fine)
            centered = lifted - mu
            # squares from f + 6 bits: their product stays below 2^62 for |x - mean| < 512
            coarse = await truncate(centered, EXTRA_BITS - SQUARE_BITS)
            squares = await mul(coarse, coarse, frac_bits=fine)
            var = await scale(squares.sum(dim=dims, keepdim=True), 1.0 / count)
            coarse_mu, coarse_var = await asyncio.gather(truncate(mu, EXTRA_BITS), truncate(var, EXTRA_BITS))
            await _update_running(running_mean, running_var, coarse_mu, coarse_var, momentum, count)
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm in inference needs running_mean and running_var")
            rm = _per_channel(running_mean, x.ndim)
            centered = lifted - (rm._with(rm.value << EXTRA_BITS, fine) if isinstance(rm, ArithmeticShare) else rm)
            var = _per_channel(running_var, x.ndim)
            if not isinstance(var, ArithmeticShare):
                inv_std_public = torch.rsqrt(var.double() + eps)
                x_hat = await mul(centered, inv_std_public, frac_bits=f)
                return await _affine(x_hat, weight, bias), BatchNormContext(x_hat, inv_std_public, weight, count, False)
            var = var._with(var.value << EXTRA_BITS, fine)
        inv_std = await inv_sqrt(var + eps, method, frac_bits=fine, exponents=STD_EXPONENTS)
        x_hat = await mul(centered, inv_std, frac_bits=fine)  # kept at f + 8 for the weight gradient
        y = await _affine(await truncate(x_hat, EXTRA_BITS), weight, bias)
        return y, BatchNormContext(x_hat, inv_std, weight, count, training)


async def _affine(x_hat: ArithmeticShare, weight: Any, bias: Any) -> ArithmeticShare:
    y = x_hat if weight is None else await mul(x_hat, _per_channel(weight, x_hat.ndim))
    return y if bias is None else y + _per_channel(bias, x_hat.ndim)


async def _update_running(running_mean: Any, running_var: Any, mu: ArithmeticShare, var: ArithmeticShare,
                          momentum: float, count: int) -> None:
    """running = (1 - momentum) * running + momentum * batch statistic (unbiased variance)."""
    updates = []
    for running, stat, factor in ((running_mean, mu, 1.0), (running_var, var, count / max(count - 1, 1))):
        if isinstance(running, ArithmeticShare):
            updates.append((running, stat.reshape(running.shape), factor))
        elif running is not None:
            raise TypeError("running statistics of a secure batch norm must be shares (they depend on the data)")
    new = await asyncio.gather(*(_blend(r, s, momentum, f) for r, s, f in updates))
    for (running, _, _), value in zip(updates, new, strict=True):
        running.value = value.value  # in place, as torch does


async def _blend(running: ArithmeticShare, stat: ArithmeticShare, momentum: float, factor: float) -> ArithmeticShare:
    kept, added = await asyncio.gather(scale(running, 1 - momentum), scale(stat, momentum * factor))
    return kept + added


async def batch_norm_backward(grad_out: ArithmeticShare, ctx: BatchNormContext
                              ) -> tuple[ArithmeticShare, ArithmeticShare | None, ArithmeticShare]:
    """(grad of the input, grad of weight (None if no weight), grad of bias), training mode."""
    dims = _reduce_dims(grad_out.ndim)
    f = grad_out.frac_bits
    with op_label("batch_norm_backward"):
        weight = None if ctx.weight is None else _per_channel(ctx.weight, grad_out.ndim)
        # sums of products are taken before truncating, so n rounding errors do not add up
        # kept 4 bits above 2f: fine enough, and n of them sum far below 2^62
        raw = mul(grad_out, ctx.x_hat, frac_bits=2 * f + 4)
        if weight is None:
            raw, d_xhat = await raw, grad_out
        else:
            raw, d_xhat = await asyncio.gather(raw, mul(grad_out, weight))
        sum_dy_xhat = await truncate(raw.sum(dim=dims, keepdim=True), raw.frac_bits - f)
        d_bias = grad_out.sum(dim=dims).reshape(-1)
        d_weight = None if weight is None else sum_dy_xhat.reshape(-1)
        if not ctx.training:  # fixed statistics: the input gradient is a per-channel scaling
            return await mul(d_xhat, ctx.inv_std, frac_bits=f), d_weight, d_bias
        # sum(d_xhat * x_hat) = gamma * sum(dy * x_hat), per channel
        sum_dx = sum_dy_xhat if weight is None else await mul(sum_dy_xhat, weight)
        sum_d = d_xhat.sum(dim=dims, keepdim=True)
        inner = d_xhat * ctx.count - sum_d - await mul(ctx.x_hat, sum_dx, frac_bits=f)
        scaled_std = await scale(ctx.inv_std, 1.0 / ctx.count)
        return await mul(inner, scaled_std, frac_bits=f), d_weight, d_bias
