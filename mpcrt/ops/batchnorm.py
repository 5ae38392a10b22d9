"""Batch normalization on shares, forward and backward, per channel (dimension 1).

The per-element work is what costs (a DCGAN batch norm sees up to a million elements, its
channel statistics a few hundred values), so everything that can be done per channel is,
and each element is opened as few times as possible: 16 bytes per element forward (x - mean
opened once for its square and its product with gamma / std), 40 backward (the textbook
form, x_hat = (x - mean) / std, then gamma * x_hat, then the backward's products with
x_hat, opens and truncates every element about three times more).

Training forward, with mean_f the batch mean rounded to f bits and c = x - mean_f (exact):
  var   = mean(c^2)                   squares at 2f, summed before the one truncation
  inv   = 1/sqrt(var + eps)           Goldschmidt with range conversion, on C values only
  g     = gamma * inv                 per channel, at f + 8 bits
  y     = g * (x - mean) + beta       one product per element, x - mean = c + (mean_f - mean)
(mean, variance and 1/std carry f + 12 fractional bits: a mean rounded at 2^-f would shift
a whole channel, an error its weight gradient sums n times; var is E[c^2] less
(mean - mean_f)^2 < 2^-34, below its precision.)
Backward, with delta = mean_f - mean and x - mean = c + delta (so x_hat is never formed):
  T      = sum(dy * c) + sum(dy) * delta          dgamma = inv * T,  dbeta = sum(dy)
  k      = g * inv * dgamma / n
  dx     = g * dy - k * (x - mean) - g * sum(dy) / n          one truncation per element

Valid while the channel variance satisfies var + eps in [2^-17, 2^15) (the inverse square
root's range; clipped outside) and n * var < 2^30 (the sum of squares at 2f; n elements
per channel), |x - mean| < 2^15, and |gamma * x_hat| and |dx| < 2^10 (products at 2f + 20
bits). With eps = 1e-5 the tiny variances of DCGAN's freshly initialised layers (about
1e-5) are covered.
Running statistics, when given as shares, are updated in place like torch's (unbiased
variance), and used as they are in inference.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import torch

from mpcrt import ring
from mpcrt.ops.products import OpenedOnce, mean, mul, scale
from mpcrt.ops.roots import inv_sqrt
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

EXTRA_BITS = 12  # mean, variance and 1/std carry f + 12 fractional bits: a variance of 1e-5 is 2,700 units
GAIN_BITS = 8  # g = gamma / std carries f + 8 bits: 1/181 (the largest std) is still 23,000 units
STD_EXPONENTS = (-17, 14)  # var + eps >= eps = 1e-5 > 2^-17
SUM_BITS = 6  # sum(dy * c) is kept at f + 6 bits before the product with 1/std


@dataclass
class BatchNormContext:
    """What the backward needs: the centered input at f bits and per-channel values."""

    centered: ArithmeticShare  # x - mean_f, at f bits
    delta: ArithmeticShare | None  # mean_f - mean at f + 12 bits, shape (1, C, 1, ...); None if exactly 0
    inv_std: ArithmeticShare | torch.Tensor  # at f + 12 bits; a tensor for public statistics
    gain: ArithmeticShare | torch.Tensor  # gamma * inv_std at f + 8 bits; a tensor when public
    has_weight: bool
    count: int
    training: bool


def _per_channel(t: Any, ndim: int) -> Any:
    shape = (1, -1) + (1,) * (ndim - 2)
    return t.reshape(*shape) if isinstance(t, ArithmeticShare) else torch.as_tensor(t).reshape(shape)


def _reduce_dims(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


def _lift(x: ArithmeticShare, bits: int) -> ArithmeticShare:
    """The same value with `bits` more fractional bits (exact)."""
    return x._with(x.value << bits, x.frac_bits + bits)


async def _times_gain(x: ArithmeticShare, gain: ArithmeticShare | torch.Tensor) -> ArithmeticShare:
    """x * gain at x's scale + f + 8 bits, untruncated; local when the gain is public."""
    fine = x.party.frac_bits + GAIN_BITS
    if isinstance(gain, ArithmeticShare):
        return await mul(x, gain, frac_bits=x.frac_bits + fine)
    return x._with(x.value * ring.encode(gain, fine), x.frac_bits + fine)


async def batch_norm(x: ArithmeticShare, running_mean: Any = None, running_var: Any = None, weight: Any = None,
                     bias: Any = None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                     method: str | None = None) -> tuple[ArithmeticShare, BatchNormContext]:
    """torch.nn.functional.batch_norm on shares; also returns the context for the backward."""
    dims = _reduce_dims(x.ndim)
    count = x.numel() // x.shape[1]
    f, fine = x.frac_bits, x.frac_bits + EXTRA_BITS
    with op_label("batch_norm"):
        if training:
            mu, mu_f = await asyncio.gather(mean(x, dim=dims, keepdim=True, frac_bits=fine),
                                            mean(x, dim=dims, keepdim=True))
            centered = x - mu_f
            # centered is opened once, for its square now and its product with the gain later
            opened = await OpenedOnce.open(centered, tuple(mu_f.shape), shift=EXTRA_BITS)
            squares = opened.square()
            # to f + 12 bits before the division: scale() works at 16 bits more than its input
            var = await scale(await truncate(squares.sum(dim=dims, keepdim=True), f - EXTRA_BITS), 1.0 / count)
            await _update_running(running_mean, running_var, mu_f, var, momentum, count)
            delta: ArithmeticShare | None = _lift(mu_f, EXTRA_BITS) - mu
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm in inference needs running_mean and running_var")
            centered, delta = x - _per_channel(running_mean, x.ndim), None
            var = _per_channel(running_var, x.ndim)
            if isinstance(var, ArithmeticShare):
                var = _lift(var, EXTRA_BITS)
        if isinstance(var, ArithmeticShare):
            inv_std: ArithmeticShare | torch.Tensor = await inv_sqrt(var + eps, method, frac_bits=fine,
                                                                     exponents=STD_EXPONENTS)
        else:
            inv_std = torch.rsqrt(var.double() + eps)
        gain = await _gain(inv_std, weight, x.ndim, f)
        if training:  # (c 2^12 + delta) * gain, c's opening reused; per channel: delta * gain + bias
            c_gain, per_channel = await asyncio.gather(opened.times(gain), _times_gain(delta, gain))
        else:
            c_gain, per_channel = await _times_gain(_exact_centered(centered, delta), gain), None
        shared_bias = isinstance(bias, ArithmeticShare)
        if shared_bias:  # added before the truncation, to the per-channel term: no pass of its own
            b = _per_channel(bias, x.ndim)
            b = _lift(b, c_gain.frac_bits - b.frac_bits)
            per_channel = b if per_channel is None else per_channel + b
        raw = c_gain if per_channel is None else c_gain + per_channel
        y = await truncate(raw, raw.frac_bits - f)
        if bias is not None and not shared_bias:
            y = y + _per_channel(bias, x.ndim)
        return y, BatchNormContext(centered, delta, inv_std, gain, weight is not None, count, training)


def _exact_centered(centered: ArithmeticShare, delta: ArithmeticShare | None) -> ArithmeticShare:
    """x - mean at f + 12 bits (local)."""
    lifted = _lift(centered, EXTRA_BITS)
    return lifted if delta is None else lifted + delta


async def _gain(inv_std: ArithmeticShare | torch.Tensor, weight: Any, ndim: int, f: int
                ) -> ArithmeticShare | torch.Tensor:
    """gamma / std per channel, at f + 8 bits when shared."""
    weight = None if weight is None else _per_channel(weight, ndim)
    if isinstance(inv_std, ArithmeticShare):
        if weight is None:
            return await truncate(inv_std, EXTRA_BITS - GAIN_BITS)
        return await mul(inv_std, weight, frac_bits=f + GAIN_BITS)
    if isinstance(weight, ArithmeticShare):
        return await mul(weight, inv_std, frac_bits=f + GAIN_BITS)
    return inv_std if weight is None else inv_std * weight.double()


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
    kept, added = await asyncio.gather(scale(running, 1 - momentum),
                                       scale(stat, momentum * factor, frac_bits=running.frac_bits))
    return kept + added


async def _mean_times_gain(d_bias: ArithmeticShare, ctx: BatchNormContext) -> ArithmeticShare:
    """gain * sum(dy) / n per channel, at 2f + 20 bits (the training backward's constant term)."""
    mean_dy = await scale(d_bias, 1.0 / ctx.count, frac_bits=d_bias.frac_bits + EXTRA_BITS)
    return await _times_gain(mean_dy, ctx.gain)


async def batch_norm_backward(grad_out: ArithmeticShare, ctx: BatchNormContext
                              ) -> tuple[ArithmeticShare, ArithmeticShare | None, ArithmeticShare]:
    """(grad of the input, grad of weight (None if no weight), grad of bias)."""
    dims = _reduce_dims(grad_out.ndim)
    f = grad_out.frac_bits
    with op_label("batch_norm_backward"):
        d_bias = grad_out.sum(dim=dims, keepdim=True)
        # sum(dy * c) before any truncation, so n rounding errors do not add up
        dy_c = mul(grad_out, ctx.centered, frac_bits=2 * f)
        if not ctx.training:  # inference: the statistics are constants
            dy_c, dy_gain = await asyncio.gather(dy_c, _times_gain(grad_out, ctx.gain))
            total = dy_c.sum(dim=dims, keepdim=True)
        else:  # sum(dy * (x - mean)) = sum(dy * c) + sum(dy) * delta
            dy_c, dy_gain, gain_mean, shift = await asyncio.gather(
                dy_c, _times_gain(grad_out, ctx.gain), _mean_times_gain(d_bias, ctx),
                mul(d_bias, ctx.delta, frac_bits=2 * f))
            total = dy_c.sum(dim=dims, keepdim=True) + shift
        total = await truncate(total, f - SUM_BITS)
        d_weight = await mul(total, ctx.inv_std, frac_bits=f)  # sum(dy * x_hat)
        if not ctx.training:  # fixed statistics: the input gradient is a per-channel scaling
            dx = await truncate(dy_gain, f + GAIN_BITS)
        else:
            # k = gain * inv_std * sum(dy * x_hat) / n, at f + 8 bits
            k = await scale(await mul(d_weight, ctx.inv_std, frac_bits=f + GAIN_BITS), 1.0 / ctx.count)
            k = await mul(k, ctx.gain, frac_bits=f + GAIN_BITS)
            k_x = await mul(_exact_centered(ctx.centered, ctx.delta), k, frac_bits=2 * f + EXTRA_BITS + GAIN_BITS)
            raw = _lift(dy_gain, EXTRA_BITS) - k_x - gain_mean  # at 2f + 20 bits
            dx = await truncate(raw, raw.frac_bits - f)
        return dx, (d_weight.reshape(-1) if ctx.has_weight else None), d_bias.reshape(-1)
