"""Reciprocal, inverse square root and square root of positive shares.

Range conversion on shares (LP-GAN's SISqrt step, made exact with our comparison):
comparing a with every power of two of the valid range at once gives a one-hot exponent
e, and any public function of e is then a local combination of the one-hot shares. So
m = a * 2^-e is in [1/2, 1) (one product), and
  1/a       = (1/m)       * 2^-e          Newton x <- x (2 - m x) from 2.9142 - 2m, 2 steps
                                          (relative error 0.086 -> 7e-3 -> 5e-5)
  1/sqrt(a) = (1/sqrt(m)) * 2^(-e/2)      a quartic in m (minimax relative on [1/2, 1],
                                          error 7.4e-5): m^2 truncated, then m^3 and m^4
                                          local products of masked values, one truncation
  sqrt(a)   = sqrt(m)     * 2^(e/2)       the same, error 8.4e-6
Where the DCF makes the one-hot (few elements, as batch norm's variances), its one key also
places a among the half powers of two, so m is in [2^-1/2, 1) and the quartics' errors are
2.4e-6 and 2.7e-7; the scale is then computed from the lookup's rounded 2^-e, so that
rounding cancels.

Rounds, not bytes, are what these cost in batch norm (one value per channel), so every
product is arranged to need no opening: m and m^2 are truncation outputs, public up to a
mask the dealer knows (ops.products), and the lookup 2^-e (or 2^(+-e/2)) that scales the
result is opened in the same round as m's product. The roots then cost 3 rounds after m
(m^2, the quartic, its product with the scale); Adam's coarse inverse root (refine=False:
the quadratic start, relative error 3.2e-3) 2.

Inputs below the range act as its lower end and inputs above as its upper end (clipped,
never wrapped); negative inputs count as below. Lookups carry LOOKUP_BITS fractional
bits, so 2^-(k+1) keeps its precision at both ends of the range.

Accuracy is stated against the input the parties hold: at f = 16, 1e-4 is 6.55 units of
2^-f, so its own rounding moves 1/sqrt by up to 4%; jobs that need small inputs exactly
use a larger f.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from mpcrt import ring
from mpcrt.ops.policy import segment_method
from mpcrt.ops.products import mul, open_masked
from mpcrt.ops.segments import pick, segment_onehot
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

T = TypeVar("T")

LOOKUP_BITS = 24  # a (scale <= 24) times a lookup stays below 2^48: far from the 2^62 limit
RECIPROCAL_RANGE = (-7, 10)  # [2^-7, 2^11): covers [1e-2, 1e3]
INV_SQRT_RANGE = (-14, 13)  # [2^-14, 2^14): covers [1e-4, 1e4]
NEWTON_STEPS = 2
INV_SQRT_START = (2.23393266, -2.06618054, 0.83543827)  # y0 = c0 + c1 m + c2 m^2, minimax relative on [1/2, 1]
M_BITS = 20  # m's scale at most: m^2 times a coefficient (COEFF_BITS) stays below 2^56
COEFF_BITS = 16
# the quartics on [2^(-1/steps), 1] by steps per power of two, minimax relative (1 / sqrt:
# 7.4e-5 and 2.4e-6; sqrt: 8.4e-6 and 2.7e-7), coefficients below 8
INV_SQRT_QUARTICS = {1: (2.93024456, -5.47632097, 6.80496639, -4.40865240, 1.14983642),
                     2: (2.68451204, -4.24723892, 4.51876286, -2.53424193, 0.57820833)}
SQRT_QUARTICS = {1: (0.22906984, 1.30066962, -0.90932214, 0.50104299, -0.12146866),
                 2: (0.25050800, 1.19274147, -0.70721021, 0.33420488, -0.07024440)}
QUARTIC_BITS = 18  # the coefficients', m^2's and the result's fractional bits: the sum stays below 2^61


def lookup(onehot: ArithmeticShare, keys: Sequence[float], g: Callable[[float], float], like: ArithmeticShare,
           bits: int = LOOKUP_BITS) -> ArithmeticShare:
    """g(k) for the one-hot over `keys` (a row's exponent, or its factor), as a share with
    `bits` fractional bits (local)."""
    return like.derived(pick(onehot, [g(k) for k in keys], bits), bits)


@dataclass
class _Converted:
    """a = m / L with m in [1/2, 1) (or [2^-1/2, 1)) and L ~ 2^-e the lookup's factor, and
    public functions of L (the result's scale, and that times a caller's factor), all masked
    for products that open nothing more."""

    m: ArithmeticShare
    scales: list[ArithmeticShare]


async def _convert(a: ArithmeticShare, lo: int, hi: int, method: str | None,
                   result_scale: Callable[[float], float], factor: ArithmeticShare | None = None,
                   steps: int = 1) -> _Converted:
    """m = a L and result_scale(L) (and that times factor) for a in [2^lo, 2^(hi+1)), L the
    segment's factor 2^-e as LOOKUP_BITS hold it (so the result's scale is exact for the m
    the parties hold): `steps` segments per power of two, so m is in [2^(-1/steps), 1)."""
    f = a.frac_bits
    powers = [lo + k / steps for k in range((hi + 1 - lo) * steps + 1)]  # thresholds 2^p
    # one-hot: below the range, a in [2^p, 2^p') for each threshold but the last, above the range
    onehot = await segment_onehot(a, [2.0 ** p for p in powers], method)
    exponents = [powers[1], *powers[1:], powers[-1]]
    factors = [ring.encode_constant(2.0 ** -e, LOOKUP_BITS) / 2 ** LOOKUP_BITS for e in exponents]
    inside = lookup(onehot[1:-1], factors[1:-1], lambda factor: factor, a)
    product, scale = await asyncio.gather(mul(a, inside, frac_bits=f + LOOKUP_BITS),  # untruncated
                                          open_masked(lookup(onehot, factors, result_scale, a)))
    # the clipped ends take a constant m: 2^lo L (a = 2^lo) and just below 1 (a = 2^top);
    # added before the truncation, so that m is a truncation's output (masked) all the same
    ends = onehot[0].times(2.0 ** lo * factors[0], f + LOOKUP_BITS) + onehot[-1].times(1 - 2.0 ** -f, f + LOOKUP_BITS)
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
    conv = await _convert(a, lo, hi, method, lambda factor: factor)
    m = conv.m
    x = 2.9142 - m * 2  # masked like m
    for _ in range(NEWTON_STEPS - 1):
        x = await mul(x, 2 - await mul(m, x))
    mx, scaled = await asyncio.gather(mul(m, x), mul(x, conv.scales[0], frac_bits=LOOKUP_BITS))
    return await mul(scaled, 2 - mx, frac_bits=a.frac_bits)


@dataclass
class RootFactors:
    """1 / sqrt(a) = y scales[0] (and factor / sqrt(a) = y scales[1]): y the polynomial in m
    and the scales, all masked (truncations' outputs, an opening made ahead), so a caller
    that multiplies the result anyway takes them into its own products, a round before the
    result would be ready."""

    y: ArithmeticShare
    scales: list[ArithmeticShare]


async def _root(a: ArithmeticShare, method: str | None, exponents: tuple[int, int], root: bool,
                frac_bits: list[int], factor: ArithmeticShare | None = None, refine: bool = True,
                factor_only: bool = False) -> list[ArithmeticShare]:
    """sqrt(a) (root) or 1 / sqrt(a) (and that times factor; only that with factor_only);
    results at frac_bits (one entry per result): the factors (_root_factors), then their
    products, one round."""
    factors, _ = await _root_factors(a, method, exponents, root, factor, refine)
    scales = factors.scales[1:] if factor_only else factors.scales
    return list(await asyncio.gather(*(mul(factors.y, s, frac_bits=bits)
                                       for s, bits in zip(scales, frac_bits, strict=True))))


async def _root_factors(a: ArithmeticShare, method: str | None, exponents: tuple[int, int], root: bool,
                        factor: ArithmeticShare | None = None, refine: bool = True,
                        beside: Callable[[list[ArithmeticShare]], Awaitable[T]] | None = None
                        ) -> tuple[RootFactors, T | None]:
    """The factors of sqrt(a) (root) or 1 / sqrt(a) for a = m / L: a quartic in m, 2 rounds
    after m, on [2^-1/2, 1) where the comparison is the DCF's (its one key serves the half
    powers of two too: relative error 2.4e-6 for 1 / sqrt, 2.7e-7 for sqrt), else on
    [1/2, 1) (7.4e-5 and 8.4e-6). refine=False (1 / sqrt only): the quadratic start on
    [1/2, 1) (relative error 3.2e-3, 4e-3 with the roundings), 1 round after m. `beside`:
    the caller's work on the scales, run while the polynomial is made (and returned)."""
    steps = 2 if refine and _half_powers_pay(a, exponents, method) else 1
    conv = await _convert(a, *exponents, method, (lambda v: v ** -0.5) if root else math.sqrt, factor, steps)
    polynomial = _quartic(conv.m, (SQRT_QUARTICS if root else INV_SQRT_QUARTICS)[steps]) if refine \
        else _inv_sqrt_start(conv.m)
    if beside is None:
        return RootFactors(await polynomial, conv.scales), None
    y, extra = await asyncio.gather(polynomial, beside(conv.scales))
    return RootFactors(y, conv.scales), extra


def _half_powers_pay(a: ArithmeticShare, exponents: tuple[int, int], method: str | None) -> bool:
    """Whether the range conversion takes the half powers of two as breakpoints too: where
    the DCF makes the one-hot (a key evaluated at twice the points; the tree's comparisons
    would grow), and the half powers are distinct at a's scale."""
    lo, hi = exponents
    count = 2 * (hi + 1 - lo) + 1
    thresholds = [ring.encode_constant(2.0 ** (lo + k / 2), a.frac_bits) for k in range(count)]
    distinct = all(t < u for t, u in itertools.pairwise(thresholds))
    return distinct and segment_method(a, count, method) == "dcf"


async def _inv_sqrt_start(m: ArithmeticShare) -> ArithmeticShare:
    """y0 = c0 + c1 m + c2 m^2 (INV_SQRT_START) at m's scale: one truncation of a local
    combination (m^2 of the masked m needs no opening)."""
    f, k = m.frac_bits, COEFF_BITS
    c0, c1, c2 = INV_SQRT_START
    mm = await mul(m, m, frac_bits=2 * f)
    return await truncate((mm.times(c2, k) + m.times(c1, k).lift(f)).plus_constant(c0), f + k)


async def _quartic(m: ArithmeticShare, coefficients: tuple[float, ...]) -> ArithmeticShare:
    """c0 + c1 m + c2 m^2 + c3 m^3 + c4 m^4 for m in [1/2, 1], a truncation's output (masked),
    at QUARTIC_BITS: 2 rounds. m^2 is truncated (masked), so m^3 = m m^2 and m^4 = m^2 m^2
    are local products like m^2, and the five terms, lifted to one scale, take one
    truncation. Every term and their sum stay below 2^61 (|c_j| < 8 at QUARTIC_BITS)."""
    f, k = m.frac_bits, QUARTIC_BITS
    square_bits = min(QUARTIC_BITS, 2 * f - 1)
    mm = await truncate(await mul(m, m, frac_bits=2 * f), 2 * f - square_bits)
    powers = [m, mm, *await asyncio.gather(mul(m, mm, frac_bits=f + square_bits),
                                           mul(mm, mm, frac_bits=2 * square_bits))]
    top = max(p.frac_bits for p in powers) + k
    total = sum((p.times(c, k).lift(top - p.frac_bits - k) for p, c in zip(powers, coefficients[1:], strict=True)),
                start=m.derived(torch.zeros_like(m.value), top))
    return await truncate(total.plus_constant(coefficients[0]), top - k)


async def inv_sqrt(a: ArithmeticShare, method: str | None = None, frac_bits: int | None = None,
                   exponents: tuple[int, int] = INV_SQRT_RANGE, refine: bool = True,
                   times: ArithmeticShare | None = None) -> ArithmeticShare:
    """1/sqrt(a) for a in [2^lo, 2^(hi+1)), (lo, hi) = exponents: by default [2^-14, 2^14)
    (covers [1e-4, 1e4]); clipped outside. `frac_bits`: the result's scale (more than a's
    keeps small results precise for a later product). refine=False takes the quadratic
    start instead of the quartic: relative error within 4e-3 instead of 1e-3 (the start's
    3.2e-3 and the roundings), a round and two products fewer (what Adam's denominator
    needs: gan.optim).
    `times`: the result is times / sqrt(a) instead, in the same rounds (the factor meets
    the result's scale lookup in the round that truncates m, opened there if it is not
    masked already; its product with the lookup keeps LOOKUP_BITS): a product fewer after."""
    with op_label("inv_sqrt"):
        (out,) = await _root(a, method, exponents, False, [frac_bits or a.frac_bits], times, refine=refine,
                             factor_only=times is not None)
        return out


async def inv_sqrt_times(a: ArithmeticShare, factor: ArithmeticShare, frac_bits: tuple[int, int],
                         method: str | None = None, exponents: tuple[int, int] = INV_SQRT_RANGE
                         ) -> tuple[ArithmeticShare, ArithmeticShare]:
    """(1/sqrt(a), factor/sqrt(a)) in the rounds of inv_sqrt alone (batch norm's 1/std and
    gamma/std): the factor meets the result's scale lookup in the round that truncates m
    (opened there if it is not masked already)."""
    with op_label("inv_sqrt"):
        out, scaled = await _root(a, method, exponents, False, list(frac_bits), factor)
        return out, scaled


async def inv_sqrt_factors(a: ArithmeticShare, factor: ArithmeticShare, method: str | None = None,
                           exponents: tuple[int, int] = INV_SQRT_RANGE,
                           beside: Callable[[list[ArithmeticShare]], Awaitable[T]] | None = None
                           ) -> tuple[RootFactors, T | None]:
    """The factors of 1/sqrt(a) and factor/sqrt(a) (RootFactors), in the rounds of
    inv_sqrt_times less its last (batch norm takes them into its output's products).
    `beside(scales)`: the caller's products with the scales (masked), run while the
    polynomial is made, their result returned with the factors."""
    with op_label("inv_sqrt"):
        return await _root_factors(a, method, exponents, False, factor, beside=beside)


async def sqrt(a: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """sqrt(a) for a in [2^-14, 2^14); clipped outside."""
    with op_label("sqrt"):
        (out,) = await _root(a, method, INV_SQRT_RANGE, True, [a.frac_bits])
        return out
