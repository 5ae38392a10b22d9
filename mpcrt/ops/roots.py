"""Reciprocal, inverse square root and square root of positive shares.

Range conversion on shares (LP-GAN's SISqrt step, made exact with our comparison):
comparing a with every power of two (reciprocal) or of four (square roots) of the valid
range at once gives a one-hot exponent e, and any public function of e is then a local
combination of the one-hot shares. So m = a * 2^-e is in [1/2, 1) or [1/4, 1) (one
product), and
  1/a       = (1/m)       * 2^-e          Newton x <- x (2 - m x) from 2.9142 - 2m, 3 steps
  1/sqrt(a) = (1/sqrt(m)) * 2^(-e/2)      linear start y0 = 2.13275 - 1.2187 m (minimax on
                                          [1/4, 1], relative error 8.6%; Liedel's is for
                                          [1/2, 1)), then Goldschmidt: g = m y, h = y / 2,
                                          r = 1/2 - g h, g += g r, h += h r (g r and h r
                                          share a round), 3 steps (error 0.18 -> 2e-7)
  sqrt(a)   = sqrt(m)     * 2^(e/2)
Powers of four halve the comparisons of the square roots (16 instead of 30 over
[2^-14, 2^16)), the costly part; the start's larger error costs nothing more.
Inputs below the range act as its lower end and inputs above as its upper end (clipped,
never wrapped); negative inputs count as below. Lookups carry LOOKUP_BITS fractional
bits, so 2^-(k+1) keeps its precision at both ends of the range.

Accuracy is stated against the input the parties hold: at f = 16, 1e-4 is 6.55 units of
2^-f, so its own rounding moves 1/sqrt by up to 4%; jobs that need small inputs exactly
use a larger f. Against the held input: within 0.3 of the budget (1e-3 relative or 4 units).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mpcrt import ring
from mpcrt.ops.products import mul
from mpcrt.ops.segments import pick, segment_onehot
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

LOOKUP_BITS = 24  # a (scale <= 24) times a lookup stays below 2^48: far from the 2^62 limit
RECIPROCAL_RANGE = (-7, 10)  # [2^-7, 2^11): covers [1e-2, 1e3]
INV_SQRT_RANGE = (-14, 13)  # [2^-14, 2^14) in powers of four: covers [1e-4, 1e4]


@dataclass
class _Converted:
    """a = m * 2^e with m in [2^-step, 1): m shared, e known as a one-hot over `exponents`."""

    m: ArithmeticShare
    onehot: ArithmeticShare  # rows, one per exponent
    exponents: list[int]

    def lookup(self, g: Callable[[int], float], like: ArithmeticShare, bits: int = LOOKUP_BITS) -> ArithmeticShare:
        """g(e) as a share with `bits` fractional bits (local)."""
        return ArithmeticShare(like.party, pick(self.onehot, [g(e) for e in self.exponents], bits), bits, like.dtype)


async def _convert(a: ArithmeticShare, lo: int, hi: int, method: str | None, step: int = 1) -> _Converted:
    """m and e for a in [2^lo, 2^top), top the first of lo + step, lo + 2 step, ... above hi."""
    f = a.frac_bits
    powers = list(range(lo, hi + 1 + step, step))  # thresholds 2^j
    # one-hot: below the range, a in [2^j, 2^(j+step)) for each threshold but the last, above the range
    onehot = await segment_onehot(a, [2.0 ** j for j in powers], method)
    exponents = [powers[1], *powers[1:], powers[-1]]
    inside = _Converted(a, onehot[1:-1], exponents[1:-1])
    m = await mul(a, inside.lookup(lambda e: 2.0 ** -e, a), frac_bits=f)
    # the clipped ends take a constant m: 2^-step (a = 2^lo) and just below 1 (a = 2^top)
    ends = (onehot[0].value * ring.encode_constant(2.0 ** -step, f)
            + onehot[-1].value * ring.encode_constant(1 - 2.0 ** -f, f))
    return _Converted(m + ArithmeticShare(a.party, ends, f, a.dtype), onehot, exponents)


async def reciprocal(a: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """1/a for a in [2^-7, 2^11) (covers [1e-2, 1e3]); clipped outside."""
    with op_label("reciprocal"):
        return await reciprocal_in_range(a, *RECIPROCAL_RANGE, method)


async def reciprocal_in_range(a: ArithmeticShare, lo: int, hi: int, method: str | None = None) -> ArithmeticShare:
    """1/a for a in [2^lo, 2^(hi+1)); clipped outside. Costs hi - lo + 2 comparisons."""
    conv = await _convert(a, lo, hi, method)
    m = conv.m
    x = 2.9142 - m * 2
    for _ in range(3):
        x = await mul(x, 2 - await mul(m, x))
    return await mul(x, conv.lookup(lambda e: 2.0 ** -e, a), frac_bits=a.frac_bits)


async def _goldschmidt(a: ArithmeticShare, method: str | None, exponents: tuple[int, int] = INV_SQRT_RANGE
                       ) -> tuple[ArithmeticShare, ArithmeticShare, _Converted]:
    """(g, h) -> (sqrt(m), 1 / (2 sqrt(m))) for a = m 2^e, m in [1/4, 1)."""
    conv = await _convert(a, *exponents, method, step=2)
    m = conv.m
    y = await mul(m, -1.2187) + 2.13275
    g, h = await asyncio.gather(mul(m, y), mul(y, 0.5))
    for _ in range(3):
        r = 0.5 - await mul(g, h)
        dg, dh = await asyncio.gather(mul(g, r), mul(h, r))
        g, h = g + dg, h + dh
    return g, h, conv


async def inv_sqrt(a: ArithmeticShare, method: str | None = None, frac_bits: int | None = None,
                   exponents: tuple[int, int] = INV_SQRT_RANGE) -> ArithmeticShare:
    """1/sqrt(a) for a in [2^lo, 2^top), top the first of lo + 2, lo + 4, ... above hi, with
    (lo, hi) = exponents: by default [2^-14, 2^14) (covers [1e-4, 1e4]); clipped outside.
    `frac_bits`: the result's scale (more than a's keeps small results precise for a later
    product)."""
    with op_label("inv_sqrt"):
        _, h, conv = await _goldschmidt(a, method, exponents)
        return await mul(h * 2, conv.lookup(lambda e: 2.0 ** (-e / 2), a), frac_bits=frac_bits or a.frac_bits)


async def sqrt(a: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """sqrt(a) for a in [2^-14, 2^14); clipped outside."""
    with op_label("sqrt"):
        g, _, conv = await _goldschmidt(a, method)
        return await mul(g, conv.lookup(lambda e: 2.0 ** (e / 2), a), frac_bits=a.frac_bits)
