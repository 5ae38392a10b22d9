"""Batch normalization on shares, forward and backward, per channel (dimension 1).

The per-element work is what costs (a DCGAN batch norm sees up to a million elements, its
channel statistics a few hundred values), so everything that can be done per channel is,
and nothing per element is opened but dy backward: x is a truncation's output (a product's,
or opened under a mask the dealer knows with the means, ops.products.open_masked), and so
are the means, gamma / std and the sums, so every product of them is local and exact in the
ring (x - mean is never formed); 16 bytes per element forward (x s gamma's truncation and
the output's) and 16 backward (the textbook form, x_hat = (x - mean) / std, then gamma *
x_hat, then the backward's products with x_hat, took 72 and 40).
Rounds: the means (one truncation each, concurrently, with gamma and the channel sums
opened), the variance, the inverse square root on C values, and the output's truncation,
the running statistics' in the inverse square root's first round: 14 at f = 16 (15 when
n / C is not a power of two). gamma / std is y s gamma for the inverse root's factors
(roots.RootFactors: y its polynomial in m, s its scale), so x s gamma and mean s gamma are
truncated while y is made and the output y (x s gamma - mean s gamma) + beta is local: a
round fewer than making gamma / std first, for 8 bytes per element more; the backward
makes 1/std and gamma / std from the factors in dy's round. A product's output may
come untruncated (x_frac_bits): with n / C a power of two it is truncated in the means'
round, the means read off its exact sum, and sum(x) mean_f becomes sum(x mean_f) (products
of masked shares, 8 bytes of material an element): the product's own truncation round
goes. Backward: 5 where the output y is known public up to a mask (BatchNormContext.output:
the forward truncated it, or the ReLU it was handed to untruncated did), else 6.

Training forward, with mean_f the batch mean rounded to f bits (S = sum(x), exact):
  var   = (sum(x^2) - 2 mean_f S + n mean_f^2) / n      = mean((x - mean_f)^2), squares at 2f
  inv   = 1/sqrt(var + eps)           range conversion and a quartic, on C values only
  g     = gamma * inv                 per channel: y_r (s gamma), the root's factors
  y     = y_r (x s gamma) - y_r (mean s gamma) + beta      x s gamma truncated beside y_r
(mean, variance and 1/std carry f + 12 fractional bits: a mean rounded at 2^-f would shift
a whole channel, an error its weight gradient sums n times; var is E[(x - mean_f)^2] less
(mean - mean_f)^2 < 2^-34, below its precision.) Products of x that leave the ring come back
in the differences: the identities hold mod 2^64, and their results fit.
Backward:
  T      = sum(dy * x) - sum(dy) * mean               dgamma = inv * T,  dbeta = sum(dy)
  k1     = inv * dgamma / n,          k = g * k1
  dx     = g * dy - k * x + k * mean - g * sum(dy) / n          one truncation per element
         = g * dy - k1 * (y - beta) - g * sum(dy) / n          y masked: no product k

Valid while the channel variance satisfies var + eps in [2^-17, 2^15) (the inverse square
root's range; clipped outside) and n * var < 2^30 (the sum of squares at 2f; n elements
per channel), |x - mean| < 2^15, |gamma * x_hat| and |dx| < 2^10 (products at 2f + 20
bits), a channel's |sum(x)| < 2^26 (the means' one truncation), |sum(dy * (x - mean))| < 2^18
(summed at 2f + 12 bits) and |dgamma / (std n)| < 2^(38 - 2f), 64 at f = 16 (its product
at 2f + 24 bits). With eps = 1e-5 the tiny variances of DCGAN's freshly initialised layers (about
1e-5) are covered.
Running statistics, when given as shares, are updated in place like torch's (unbiased
variance), and used as they are in inference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import torch

from mpcrt.ops.policy import gain_fusion_pays
from mpcrt.ops.products import mul, open_masked, scale
from mpcrt.ops.roots import RootFactors, inv_sqrt, inv_sqrt_factors, inv_sqrt_times
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

EXTRA_BITS = 12  # mean, variance and 1/std carry f + 12 fractional bits: a variance of 1e-5 is 2,700 units
GAIN_BITS = 8  # g = gamma / std carries f + 8 bits: 1/181 (the largest std) is still 23,000 units
STD_EXPONENTS = (-17, 14)  # var + eps >= eps = 1e-5 > 2^-17
BLEND_BITS = 24  # the running statistics' weights (1 - momentum, momentum): statistics at f stay below 2^56
MEAN_BITS = 20  # divisions by the count: the factor 1/count carries 20 + log2(count) bits
INV_N_EXTRA_BITS = 24  # 1/(std n) for the backward at f + 24 bits (40 at f = 16)
SUM_BITS = 6  # sum(dy * c) is kept at f + 6 bits before the product with 1/std


@dataclass
class BatchNormContext:
    """What the backward needs: the input (x - mean, given as x and the mean) and per-channel values."""

    centered: ArithmeticShare  # training: x itself (masked); inference: x - running_mean; at f bits
    mean: ArithmeticShare | None  # training: the batch mean at f + 12 bits, shape (1, C, 1, ...) (masked)
    inv_std: ArithmeticShare | torch.Tensor | None  # at f + 12 bits; a tensor for public statistics (see factors)
    gain: ArithmeticShare | torch.Tensor | None  # gamma * inv_std at f + 8 bits; a tensor when public
    has_weight: bool
    count: int
    training: bool
    bias: Any = None  # beta (a share, a tensor or None)
    # training: the output y = gamma x_hat + beta at f bits, public up to a mask (a
    # truncation's output), once made: by the forward when it truncates y, else by the layer
    # it handed y to untruncated (an activation that truncates it while it compares it)
    output: ArithmeticShare | None = None
    # training with shared statistics and gamma: inv_std and gain as the forward left them,
    # factors (roots.RootFactors), their products made by the backward in dy's round
    factors: RootFactors | None = None

    def statistics(self, f: int) -> Awaitable[Any]:
        """[inv_std at f + 12 bits, gain at f + 8]: kept, or from the factors in one round
        (their truncations start now, so they leave in the caller's frame)."""
        if self.factors is None:
            return _kept([self.inv_std, self.gain])
        y, (scale, scaled) = self.factors.y, self.factors.scales
        return asyncio.gather(mul(y, scale, frac_bits=f + EXTRA_BITS), mul(y, scaled, frac_bits=f + GAIN_BITS))


async def _kept(values: list[Any]) -> list[Any]:
    return values


def _per_channel(t: Any, ndim: int) -> Any:
    shape = (1, -1) + (1,) * (ndim - 2)
    return t.reshape(*shape) if isinstance(t, ArithmeticShare) else torch.as_tensor(t).reshape(shape)


def _reduce_dims(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


async def _times_gain(x: ArithmeticShare, gain: ArithmeticShare | torch.Tensor) -> ArithmeticShare:
    """x * gain at x's scale + f + 8 bits, untruncated; local when the gain is public."""
    fine = x.party.frac_bits + GAIN_BITS
    if isinstance(gain, ArithmeticShare):
        return await mul(x, gain, frac_bits=x.frac_bits + fine)
    return x.times(gain, fine)


@dataclass(frozen=True)
class Normalized:
    """A batch norm's output and the context its backward needs."""

    output: ArithmeticShare
    context: BatchNormContext


async def batch_norm(x: ArithmeticShare, running_mean: Any = None, running_var: Any = None, weight: Any = None,
                     bias: Any = None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                     method: str | None = None, frac_bits: int | None = None,
                     x_frac_bits: int | None = None) -> ArithmeticShare:
    """torch.nn.functional.batch_norm on shares. frac_bits: the output's scale, default x's;
    more keeps the output untruncated (at 2f + 20 bits at most, for a ReLU that truncates
    it while it takes its sign). x_frac_bits: x is a product's untruncated output, standing
    for that scale (see batch_norm_with_context)."""
    return (await batch_norm_with_context(x, running_mean, running_var, weight, bias, training, momentum, eps,
                                          method, frac_bits, x_frac_bits)).output


async def batch_norm_with_context(x: ArithmeticShare, running_mean: Any = None, running_var: Any = None,
                                  weight: Any = None, bias: Any = None, training: bool = False, momentum: float = 0.1,
                                  eps: float = 1e-5, method: str | None = None, frac_bits: int | None = None,
                                  x_frac_bits: int | None = None) -> Normalized:
    """batch_norm(...) and the context for `batch_norm_backward`, in the same rounds.
    x_frac_bits: x is a product's untruncated output standing for that scale. In training,
    at no more than twice that scale and with a power-of-two count per channel, x is
    truncated in the means' round, the means read off its exact sum (a round fewer than a
    product that truncates first); elsewhere it is truncated first."""
    dims = _reduce_dims(x.ndim)
    count = x.numel() // x.shape[1]
    cut = 0 if x_frac_bits is None else x.frac_bits - x_frac_bits
    if cut < 0:
        raise ValueError(f"a share with {x.frac_bits} fractional bits cannot stand for {x_frac_bits}")
    takes_untruncated = cut > 0 and training and count & (count - 1) == 0 and x.frac_bits <= 2 * x_frac_bits
    if cut and not takes_untruncated:
        x = await truncate(x, cut)
    f = x.frac_bits - cut if takes_untruncated else x.frac_bits
    fine = f + EXTRA_BITS
    with op_label("batch_norm"):
        gamma = None if weight is None else _per_channel(weight, x.ndim)
        if takes_untruncated:
            # the means from the exact sum of the untruncated x (count = 2^e: a shift), while x
            # is truncated; sum(x) * mean_f then as sum(x * mean_f), products of masked shares
            total, e = x.sum(dim=dims, keepdim=True), count.bit_length() - 1
            mu, mu_f, x, *masked_gamma = await asyncio.gather(
                truncate(total, total.frac_bits + e - fine), truncate(total, total.frac_bits + e - f),
                truncate(x, cut), *([open_masked(gamma)] if isinstance(gamma, ArithmeticShare) else []))
            mu, mu_f = mu.divided_exactly(e), mu_f.divided_exactly(e)  # the sum's bits read as the mean's
            gamma = masked_gamma[0] if masked_gamma else gamma
            squares, cross, mean_square = await asyncio.gather(
                mul(x, x, frac_bits=2 * f), mul(x, mu_f, frac_bits=2 * f), mul(mu_f, mu_f, frac_bits=2 * f))
            mean_sum = cross.sum(dim=dims, keepdim=True)
        elif training:
            # the means, with gamma and the channel sums opened ahead (masked) for their
            # products, and x too unless it is a truncation's output already
            total = x.sum(dim=dims, keepdim=True)
            opened = [open_masked(x), open_masked(total)] + ([open_masked(gamma)] if isinstance(gamma, ArithmeticShare)
                                                             else [])
            mu, mu_f, x, total, *masked_gamma = await asyncio.gather(
                _divided(total, count, fine), _divided(total, count, f), *opened)
            gamma = masked_gamma[0] if masked_gamma else gamma
            # sum((x - mean_f)^2) = sum(x^2) - 2 mean_f S + n mean_f^2: products of masked shares, local
            squares, mean_sum, mean_square = await asyncio.gather(
                mul(x, x, frac_bits=2 * f), mul(mu_f, total, frac_bits=2 * f), mul(mu_f, mu_f, frac_bits=2 * f))
        if training:
            sum_sq = squares.sum(dim=dims, keepdim=True) - mean_sum * 2 + mean_square * count
            var, var_f = await asyncio.gather(scale(sum_sq, 1.0 / count, frac_bits=fine),  # and at f for the
                                              scale(sum_sq, 1.0 / count, frac_bits=f))  # running variance
            centered, mean = x, mu
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm in inference needs running_mean and running_var")
            centered, mean = x - _per_channel(running_mean, x.ndim), None
            var = _per_channel(running_var, x.ndim)
            if isinstance(var, ArithmeticShare):
                var = var.lift(EXTRA_BITS)
        # the running statistics update in the first round of the inverse square root (one
        # gather, so that their messages leave in one frame)
        updates = _running_updates(running_mean, running_var, mu_f, var_f, momentum, count) if training else []
        factors = None
        if training and isinstance(var, ArithmeticShare) and isinstance(gamma, ArithmeticShare) \
                and gain_fusion_pays(x):
            # gain = gamma / std = y s_gamma (roots.RootFactors): x s_gamma and mean s_gamma are
            # truncated while y is made, then gain x - gain mean = y (x s_gamma - mean s_gamma),
            # products of masked shares (local): gain itself is the backward's, made there
            def scaled(scales: list[ArithmeticShare]) -> Awaitable[list[ArithmeticShare]]:
                return asyncio.gather(mul(x, scales[1], frac_bits=f + GAIN_BITS),
                                      mul(mean, scales[1], frac_bits=f + GAIN_BITS))

            (factors, (x_scaled, mean_scaled)), *updated = await asyncio.gather(
                inv_sqrt_factors(var + eps, gamma, method, STD_EXPONENTS, beside=scaled),
                *(_blend(*update) for update in updates))
            inv_std = gain = None
        else:
            (inv_std, gain), *updated = await asyncio.gather(_inv_std_and_gain(var, eps, gamma, f, method),
                                                             *(_blend(*update) for update in updates))
        for (running, *_), value in zip(updates, updated, strict=True):
            running.value, running.opening = value.value, None  # in place, as torch does
        if factors is not None:
            wide = x_scaled.frac_bits + factors.y.frac_bits
            c_gain, mean_gain = await asyncio.gather(mul(x_scaled, factors.y, frac_bits=wide),
                                                     mul(mean_scaled, factors.y, frac_bits=wide))
            per_channel = -mean_gain
        elif training:  # gain x - gain mean, all masked: local; per channel: - gain mean + bias
            wide = 2 * f + GAIN_BITS + EXTRA_BITS
            c_gain, mean_gain = await asyncio.gather(mul(x, gain, frac_bits=wide), mul(mean, gain, frac_bits=wide))
            per_channel = -mean_gain
        else:
            c_gain, per_channel = await _times_gain(centered.lift(EXTRA_BITS), gain), None
        shared_bias = isinstance(bias, ArithmeticShare)
        if shared_bias:  # added before the truncation, to the per-channel term: no pass of its own
            b = _per_channel(bias, x.ndim)
            b = b.lift(c_gain.frac_bits - b.frac_bits)
            per_channel = b if per_channel is None else per_channel + b
        raw = c_gain if per_channel is None else c_gain + per_channel
        target = f if frac_bits is None else min(frac_bits, raw.frac_bits)
        y = await truncate(raw, raw.frac_bits - target)
        if bias is not None and not shared_bias:
            y = y + _per_channel(bias, x.ndim)
        context = BatchNormContext(centered, mean, inv_std, gain, weight is not None, count, training, bias,
                                   y if target == f and target < raw.frac_bits else None, factors)
        return Normalized(y, context)


def _divided(total: ArithmeticShare, count: int, frac_bits: int) -> Awaitable[ArithmeticShare]:
    """total / count at frac_bits in one truncation: total times round(2^(20 + e) / count)
    for count in [2^e, 2^(e+1)), shifted by 20 + e (the factor's relative error, 2^-21, is
    below the result's precision). Needs |total| * 2^20 < 2^62 at total's scale."""
    e = count.bit_length() - 1
    bits = MEAN_BITS + e + total.frac_bits - frac_bits
    return truncate(total.times(1 / count, MEAN_BITS + e), bits)


async def _inv_std_and_gain(var: Any, eps: float, gamma: Any, f: int, method: str | None) -> tuple[Any, Any]:
    """1/sqrt(var + eps) at f + 12 bits and gamma / std at f + 8 (tensors when the
    statistics and gamma are public)."""
    if not isinstance(var, ArithmeticShare):
        inv_std = torch.rsqrt(var.double() + eps)
        if isinstance(gamma, ArithmeticShare):
            return inv_std, await mul(gamma, inv_std, frac_bits=f + GAIN_BITS)
        return inv_std, inv_std if gamma is None else inv_std * gamma.double()
    fine = f + EXTRA_BITS
    if isinstance(gamma, ArithmeticShare):
        return await inv_sqrt_times(var + eps, gamma, (fine, f + GAIN_BITS), method, STD_EXPONENTS)
    inv_std = await inv_sqrt(var + eps, method, frac_bits=fine, exponents=STD_EXPONENTS)
    if gamma is None:
        return inv_std, await truncate(inv_std, EXTRA_BITS - GAIN_BITS)
    return inv_std, await mul(inv_std, gamma, frac_bits=f + GAIN_BITS)


def _running_updates(running_mean: Any, running_var: Any, mu: ArithmeticShare, var: ArithmeticShare,
                     momentum: float, count: int) -> list[tuple[ArithmeticShare, ArithmeticShare, float, float]]:
    """(running, batch statistic, momentum, factor) for each running statistic given as a
    share: running = (1 - momentum) running + momentum factor statistic (the variance unbiased)."""
    updates = []
    for running, stat, factor in ((running_mean, mu, 1.0), (running_var, var, count / max(count - 1, 1))):
        if isinstance(running, ArithmeticShare):
            updates.append((running, stat.reshape(running.shape), momentum, factor))
        elif running is not None:
            raise TypeError("running statistics of a secure batch norm must be shares (they depend on the data)")
    return updates


def _blend(running: ArithmeticShare, stat: ArithmeticShare, momentum: float, factor: float
           ) -> Awaitable[ArithmeticShare]:
    """(1 - momentum) running + momentum factor stat, in one truncation (both weights at
    BLEND_BITS, the two terms at the finer of their scales)."""
    top = max(running.frac_bits, stat.frac_bits)
    raw = (running.lift(top - running.frac_bits).times(1 - momentum, BLEND_BITS)
           + stat.lift(top - stat.frac_bits).times(momentum * factor, BLEND_BITS))
    return truncate(raw, top + BLEND_BITS - running.frac_bits)


async def batch_norm_backward(grad_out: ArithmeticShare, ctx: BatchNormContext, frac_bits: int | None = None
                              ) -> tuple[ArithmeticShare, ArithmeticShare | None, ArithmeticShare]:
    """(grad of the input, grad of weight (None if no weight), grad of bias). dy is opened
    once (masked); every product with the forward's masked values is then local.
    frac_bits: grad_out is untruncated, standing for that scale: truncated in dy's opening
    (a truncation's output is masked), so a layer can hand it over a round early."""
    dims = _reduce_dims(grad_out.ndim)
    f = grad_out.frac_bits if frac_bits is None else frac_bits
    cut = grad_out.frac_bits - f
    if cut < 0:
        raise ValueError(f"a gradient with {grad_out.frac_bits} fractional bits cannot stand for {f}")

    def opened(t: ArithmeticShare) -> Awaitable[ArithmeticShare]:
        return truncate(t, cut) if cut else open_masked(t)

    with op_label("batch_norm_backward"):
        d_bias = grad_out.sum(dim=dims, keepdim=True)
        if not ctx.training:  # inference: the statistics are constants
            dy, d_bias = await asyncio.gather(opened(grad_out), truncate(d_bias, cut))
            dy_c, dy_gain = await asyncio.gather(mul(dy, ctx.centered, frac_bits=2 * f), _times_gain(dy, ctx.gain))
            total = await truncate(dy_c.sum(dim=dims, keepdim=True), f - SUM_BITS)
            d_weight, dx = await asyncio.gather(mul(total, ctx.inv_std, frac_bits=f),
                                                truncate(dy_gain, f + GAIN_BITS))
            return dx, (d_weight.reshape(-1) if ctx.has_weight else None), d_bias.reshape(-1)
        assert ctx.mean is not None
        # k (x - mean) = k1 gain (x - mean) = k1 (y - beta) for the forward's masked output y:
        # no product k = k1 gain, one round fewer; beta opened (masked) with dy if a share
        y = ctx.output if ctx.output is not None and ctx.output.opening is not None else None
        beta = _per_channel(ctx.bias, grad_out.ndim) if y is not None and ctx.bias is not None else None
        dy, d_bias, (inv_std, gain), *opened_beta = await asyncio.gather(
            opened(grad_out), opened(d_bias),  # d_bias: sum(dy)
            ctx.statistics(f), *([open_masked(beta)] if isinstance(beta, ArithmeticShare) else []))
        beta = opened_beta[0] if opened_beta else beta
        # sum(dy * (x - mean)) = sum(dy * x) - sum(dy) * mean, summed before the one truncation
        dy_x, dy_gain, shift = await asyncio.gather(
            mul(dy, ctx.centered, frac_bits=2 * f), mul(dy, gain, frac_bits=2 * f + GAIN_BITS),
            mul(d_bias, ctx.mean, frac_bits=2 * f + EXTRA_BITS))
        raw_total = dy_x.sum(dim=dims, keepdim=True).lift(EXTRA_BITS) - shift
        total, mean_dy, inv_n = await asyncio.gather(truncate(raw_total, raw_total.frac_bits - f - SUM_BITS),
                                                      _divided(d_bias, ctx.count, f + EXTRA_BITS),
                                                      _divided(inv_std, ctx.count, f + INV_N_EXTRA_BITS))
        wide = 2 * f + EXTRA_BITS + GAIN_BITS
        d_weight, gain_mean = await asyncio.gather(mul(total, inv_std, frac_bits=f),  # sum(dy * x_hat)
                                                   mul(mean_dy, gain, frac_bits=wide))
        # k1 = inv_std * sum(dy * x_hat) / n, at f + 8 bits
        k1 = await mul(d_weight, inv_n, frac_bits=f + GAIN_BITS)
        if y is not None:
            k_centered = await _times_centered_output(k1, y, beta, wide)
        else:  # k = gain * k1
            k = await mul(k1, gain, frac_bits=f + GAIN_BITS)
            k_x, k_mean = await asyncio.gather(mul(ctx.centered, k, frac_bits=wide), mul(ctx.mean, k, frac_bits=wide))
            k_centered = k_x - k_mean
        raw = dy_gain.lift(EXTRA_BITS) - k_centered - gain_mean  # at 2f + 20 bits
        dx = await truncate(raw, raw.frac_bits - f)
        return dx, (d_weight.reshape(-1) if ctx.has_weight else None), d_bias.reshape(-1)


async def _times_centered_output(k1: ArithmeticShare, y: ArithmeticShare, beta: Any, frac_bits: int
                                 ) -> ArithmeticShare:
    """k1 (y - beta) at frac_bits: products of masked shares (local); beta masked, public or None."""
    ky = await mul(y, k1, frac_bits=y.frac_bits + k1.frac_bits)
    if isinstance(beta, ArithmeticShare):
        ky = ky - await mul(beta, k1, frac_bits=ky.frac_bits)
    elif beta is not None:
        ky = ky - k1.times(beta, y.frac_bits)
    return ky.lift(frac_bits - ky.frac_bits)
