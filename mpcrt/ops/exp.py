"""exp on shares, and LP-GAN's sigmoid construction built on it.

exp(x) = 2^t with t = x log2(e). Comparing x with every j ln 2 (j = -23 .. 24) at once
gives the one-hot k = floor(t); then r = t - k is in [0, 1), 2^r is a degree-4 polynomial
(relative error 3.6e-6), and 2^k is a public lookup on the one-hot. Valid for
x in [-23 ln 2, 24 ln 2) = [-15.94, 16.64); below it the result is 2^-23, above it just
under 2^24 (clipped, never wrapped). Error at most 6e-5 relative plus 2 units u = 2^-f:
t one unit (1.1e-5 relative in e^x), 2^r's fit 3.6e-6, its powers' and its own truncation
up to 3 units of 2^r in [1, 2) (4.6e-5), the product's truncation one unit, and 2^k's
rounding (k < -f) half a unit of 2^k times 2^r < 2.

LP-GAN's sigmoid: 1 / (1 + e^-x) with the Newton reciprocal (SecInv) started from the
range-converted input, on the ring instead of LP-GAN's leaky multiplicative shares. It
is the faithful baseline; the piecewise default (ops.sigmoid) is far cheaper.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from mpcrt.ops.piecewise import COEFF_BITS, polynomial_terms, powers_of
from mpcrt.ops.products import mul
from mpcrt.ops.roots import lookup, reciprocal_in_range
from mpcrt.ops.segments import pick, segment_onehot
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

K_LOW, K_HIGH = -23, 24  # thresholds j ln 2 for j in [K_LOW, K_HIGH]
T_BITS = 32  # fractional bits of log2(e) in t = x log2(e)
_nodes = np.cos(np.linspace(0, np.pi, 400)) * 0.5 + 0.5
EXP2_COEFFS = tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(
    np.polynomial.chebyshev.chebfit(_nodes, 2.0 ** _nodes, 4)))


async def exp(x: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """e^x for x in [-15.94, 16.64); clipped outside."""
    party, f = x.party, x.frac_bits
    with op_label("exp"):
        js = list(range(K_LOW, K_HIGH + 1))
        segments, t = await asyncio.gather(segment_onehot(x, [j * math.log(2) for j in js], method),
                                           _log2e_times(x))
        below, onehot, above = segments[0], segments[1:-1], segments[-1]  # onehot: k = K_LOW .. K_HIGH - 1
        inside = 1 - below - above  # K_LOW ln 2 <= x < K_HIGH ln 2
        k = ArithmeticShare.integers(party, pick(onehot, js[:-1], 0))
        frac = await mul(t - k.lift(f), inside)
        r = frac + above.times(1 - 2.0 ** -f, f)  # above the range: r just under 1 with k = K_HIGH - 1
        poly = polynomial_terms(await powers_of(r, 4), EXP2_COEFFS)
        two_r = await truncate(poly, COEFF_BITS)
        # 2^23 at more bits would overflow the product
        two_k = lookup(segments, [K_LOW, *js[:-1], K_HIGH - 1], lambda e: 2.0 ** e, x, bits=f)
        # below the range 2^r is 1 (r = 0 there), so the result is 2^K_LOW
        return await mul(two_r, two_k, frac_bits=f)


async def _log2e_times(x: ArithmeticShare) -> ArithmeticShare:
    """t = x log2(e), one truncation (as `scale`), with log2(e) at T_BITS bits instead of
    scale's 16: an error of 2^-17 relative in t would be 1.3e-4 relative in e^x at the top
    of the range. Error: one unit of 2^-f. Inside the range |x 2^f log2(e) 2^T_BITS| stays
    below 2^61; outside it t may wrap, harmlessly: exp multiplies it by `inside` = 0."""
    bits = min(T_BITS, 56 - x.frac_bits)
    return await truncate(x.times(1 / math.log(2), bits), bits)


async def sigmoid_lpgan(x: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """LP-GAN's construction: exp, then the Newton reciprocal of 1 + e^-x (range [1, 2^24])."""
    with op_label("sigmoid_lpgan"):
        return await reciprocal_in_range(1 + await exp(-x, method), 0, 24, method)


async def tanh_lpgan(x: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """2 sigmoid(2x) - 1 with LP-GAN's sigmoid."""
    with op_label("tanh_lpgan"):
        return await sigmoid_lpgan(x * 2, method) * 2 - 1
