"""Reciprocal, inverse square root and square root of positive shares.

Range conversion on shares (LP-GAN's SISqrt step, made exact with our comparison):
comparing a with every power of two of the valid range at once gives a one-hot exponent
e, and any public function of e is then a local combination of the one-hot shares. So
m = a * 2^-e is in [1/2, 1) (one product), and
  1/a       = (1/m)       * 2^-e          Newton x <- x (2 - m x) from 2.9142 - 2m, 2 steps
                                          (relative error 0.086 -> 7e-3 -> 5e-5)
  1/sqrt(a) = (1/sqrt(m)) * 2^(-e/2)      quadratic start y0 (minimax on [1/2, 1], relative
                                          error 3.2e-3), then one Goldschmidt step: g = m y,
                                          h = y / 2, r = 3/2 - g h, h r (error 1.5e-5)
  sqrt(a)   = sqrt(m)     * 2^(e/2)
Rounds, not bytes, are what these cost in batch norm (one value per channel), so every
product is arranged to need no opening: m and each step's results are truncation
outputs, public up to a mask the dealer knows (ops.products), and the lookup 2^-e (or
2^(+-e/2)) that scales the result is opened in the same round as m's product and joins
the last step. Each step then costs its truncations only: 2 rounds (the roots' start,
h = y0 / 2 from m^2 and then g = m y0, 2 more).
Inputs below the range act as its lower end and inputs above as its upper end (clipped,
never wrapped); negative inputs count as below. Lookups carry LOOKUP_BITS fractional
bits, so 2^-(k+1) keeps its precision at both ends of the range.

Accuracy is stated against the input the parties hold: at f = 16, 1e-4 is 6.55 units of
2^-f, so its own rounding moves 1/sqrt by up to 4%; jobs that need small inputs exactly
use a larger f.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mpcrt.ops.products import mul, open_masked
from mpcrt.ops.segments import pick, segment_onehot
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

LOOKUP_BITS = 24  # a (scale <= 24) times a lookup stays below 2^48: far from the 2^62 limit
RECIPROCAL_RANGE = (-7, 10)  # [2^-7, 2^11): covers [1e-2, 1e3]
INV_SQRT_RANGE = (-14, 13)  # [2^-14, 2^14): covers [1e-4, 1e4]
NEWTON_STEPS = 2
INV_SQRT_START = (2.23393266, -2.06618054, 0.83543827)  # y0 = c0 + c1 m + c2 m^2, minimax relative on [1/2, 1]
M_BITS = 20  # m's scale at most: m^2 times a coefficient (COEFF_BITS) stays below 2^56
COEFF_BITS = 16


def lookup(onehot: ArithmeticShare, exponents: list[int], g: Callable[[int], float], like: ArithmeticShare,
           bits: int = LOOKUP_BITS) -> ArithmeticShare:
    """g(e) for the one-hot e over `exponents`, as a share with `bits` fractional bits (local)."""
    return like.derived(pick(onehot, [g(e) for e in exponents], bits), bits)


@dataclass
class _Converted:
    """a = m * 2^e with m in [1/2, 1), and public functions of e (the result's scale, and
    that times a caller's factor), all masked for products that open nothing more."""

    m: ArithmeticShare
    scales: list[ArithmeticShare]


async def _convert(a: ArithmeticShare, lo: int, hi: int, method: str | None,
                   result_scale: Callable[[int], float], factor: ArithmeticShare | None = None) -> _Converted:
    """m and result_scale(e) (and result_scale(e) * factor) for a in [2^lo, 2^(hi+1))."""
    f = a.frac_bits
    powers = list(range(lo, hi + 2))  # thresholds 2^j
    # one-hot: below the range, a in [2^j, 2^(j+1)) for each threshold but the last, above the range
    onehot = await segment_onehot(a, [2.0 ** j for j in powers], method)
    exponents = [powers[1], *powers[1:], powers[-1]]
    inside = lookup(onehot[1:-1], exponents[1:-1], lambda e: 2.0 ** -e, a)
    product, scale = await asyncio.gather(mul(a, inside, frac_bits=f + LOOKUP_BITS),  # untruncated
                                          open_masked(lookup(onehot, exponents, result_scale, a)))
    # the clipped ends take a constant m: 1/2 (a = 2^lo) and just below 1 (a = 2^top);
    # added before the truncation, so that m is a truncation's output (masked) all the same
    ends = onehot[0].times(0.5, f + LOOKUP_BITS) + onehot[-1].times(1 - 2.0 ** -f, f + LOOKUP_BITS)
    truncated = truncate(product + ends,
                         f + LOOKUP_BITS - min(f, M_BITS))
    if factor is None:
        return _Converted(await truncated, [scale])
    m, scaled = await asyncio.gather(truncated, mul(scale, factor, frac_bits=LOOKUP_BITS))
    return _Converted(m, [scale, scaled])


async def reciprocal(a: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """1/a for a in [2^-7, 2^11) (covers [1e-2, 1e3]); clipped outside."""
    with op_label("reciprocal"):
        return await reciprocal_in_range(a, *RECIPROCAL_RANGE, method)


async def reciprocal_in_range(a: ArithmeticShare, lo: int, hi: int, method: str | None = None) -> ArithmeticShare:
    """1/a for a in [2^lo, 2^(hi+1)); clipped outside. Costs hi - lo + 4 comparisons."""
    conv = await _convert(a, lo, hi, method, lambda e: 2.0 ** -e)
    m = conv.m
    x = 2.9142 - m * 2  # masked like m
    for _ in range(NEWTON_STEPS - 1):
        x = await mul(x, 2 - await mul(m, x))
    mx, scaled = await asyncio.gather(mul(m, x), mul(x, conv.scales[0], frac_bits=LOOKUP_BITS))
    return await mul(scaled, 2 - mx, frac_bits=a.frac_bits)


async def _goldschmidt(a: ArithmeticShare, method: str | None, exponents: tuple[int, int],
                       result_scale: Callable[[int], float], root: bool, frac_bits: list[int],
                       factor: ArithmeticShare | None = None, refine: bool = True,
                       factor_only: bool = False) -> list[ArithmeticShare]:
    """sqrt(m) (root) or 1 / sqrt(m), times result_scale(e) (and that times factor; only
    that with factor_only), for a = m 2^e; results at frac_bits (one entry per result).
    refine=False (1 / sqrt only): the start y0 alone (relative error 3.2e-3, 4e-3 with the
    roundings), its scale joining y0 = 2h: 2 rounds and three products fewer."""
    conv = await _convert(a, *exponents, method, result_scale, factor)
    scales = conv.scales[1:] if factor_only else conv.scales
    m, f, k = conv.m, conv.m.frac_bits, COEFF_BITS
    c0, c1, c2 = INV_SQRT_START
    # h = y0 / 2 = (c0 + c1 m + c2 m^2) / 2: one truncation of a local combination (m^2 of
    # the masked m needs no opening), then g = m y0
    mm = await mul(m, m, frac_bits=2 * f)
    h = await truncate((mm.times(c2 / 2, k) + m.times(c1 / 2, k).lift(f)).plus_constant(c0 / 2), f + k)
    if not refine:
        return list(await asyncio.gather(*(mul(h * 2, s, frac_bits=bits)
                                           for s, bits in zip(scales, frac_bits, strict=True))))
    # one Goldschmidt step: r = 3/2 - g h, g r and h r, the results' scales joining h r
    # (the inverse root's scaled h is ready with g, the root's scaled g with g h)
    g, *scaled = await asyncio.gather(mul(m, h * 2), *([] if root else [mul(h * 2, s, frac_bits=LOOKUP_BITS)
                                                                       for s in scales]))
    gh, *scaled_g = await asyncio.gather(mul(g, h), *([mul(g, s, frac_bits=LOOKUP_BITS) for s in scales]
                                                      if root else []))
    return list(await asyncio.gather(*(mul(s, 1.5 - gh, frac_bits=bits)
                                       for s, bits in zip(scaled or scaled_g, frac_bits, strict=True))))


async def inv_sqrt(a: ArithmeticShare, method: str | None = None, frac_bits: int | None = None,
                   exponents: tuple[int, int] = INV_SQRT_RANGE, refine: bool = True,
                   times: ArithmeticShare | None = None) -> ArithmeticShare:
    """1/sqrt(a) for a in [2^lo, 2^(hi+1)), (lo, hi) = exponents: by default [2^-14, 2^14)
    (covers [1e-4, 1e4]); clipped outside. `frac_bits`: the result's scale (more than a's
    keeps small results precise for a later product). refine=False skips the Goldschmidt
    step: relative error within 4e-3 instead of 1e-3 (the start's 3.2e-3 and the roundings),
    2 rounds and three products fewer (what Adam's denominator needs: gan.optim).
    `times`: the result is times / sqrt(a) instead, in the same rounds (the factor meets
    the result's scale lookup in the round that truncates m, opened there if it is not
    masked already; its product with the lookup keeps LOOKUP_BITS): a product fewer after."""
    with op_label("inv_sqrt"):
        (out,) = await _goldschmidt(a, method, exponents, lambda e: 2.0 ** (-e / 2), False, [frac_bits or a.frac_bits],
                                    times, refine=refine, factor_only=times is not None)
        return out


async def inv_sqrt_times(a: ArithmeticShare, factor: ArithmeticShare, frac_bits: tuple[int, int],
                         method: str | None = None, exponents: tuple[int, int] = INV_SQRT_RANGE
                         ) -> tuple[ArithmeticShare, ArithmeticShare]:
    """(1/sqrt(a), factor/sqrt(a)) in the rounds of inv_sqrt alone (batch norm's 1/std and
    gamma/std): the factor meets the result's scale lookup in the round that truncates m
    (opened there if it is not masked already)."""
    with op_label("inv_sqrt"):
        out, scaled = await _goldschmidt(a, method, exponents, lambda e: 2.0 ** (-e / 2), False, list(frac_bits),
                                         factor)
        return out, scaled


async def sqrt(a: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """sqrt(a) for a in [2^-14, 2^14); clipped outside."""
    with op_label("sqrt"):
        (out,) = await _goldschmidt(a, method, INV_SQRT_RANGE, lambda e: 2.0 ** (e / 2), True, [a.frac_bits])
        return out
