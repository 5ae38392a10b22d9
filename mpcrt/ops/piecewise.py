"""Piecewise polynomials on shares, segments chosen by exact comparisons.

f(x) = left for x < t_1, p_j(x) on [t_j, t_(j+1)), right for x >= t_m. All comparisons
[x >= t_j] run as one vectorized sign computation, concurrently with the powers of x. The
integer segment indicators then select the coefficients, not the evaluated pieces: c_k =
sum_j [x in segment j] * a_(j,k) is local (public a_(j,k) encoded with COEFF_BITS extra
fractional bits, so a coefficient's rounding is not amplified by x^4), and f(x) = c_0 +
sum_k c_k x^k is one batched product of the d coefficient shares with the d powers and one
truncation: 16d + 8 bytes per element, where evaluating every piece and selecting among
them took 24 (m - 1) (a truncation and a product opening both sides per piece). Outside
[t_1, t_m) every c_k is a share of 0, so even powers that wrapped contribute exactly 0.
Rounds: max(comparison, powers) + 2.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from mpcrt import ring
from mpcrt.ops.products import mul, open_masked, square
from mpcrt.ops.segments import pick, segment_onehot
from mpcrt.ops.truncation import truncate
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

COEFF_BITS = 32


@dataclass(frozen=True)
class Piecewise:
    """Breakpoints t_1 < ... < t_m, m - 1 inner polynomials (monomial coefficients, lowest
    first, all of one degree), and the constants left of t_1 and right of t_m."""

    breakpoints: tuple[float, ...]
    coefficients: tuple[tuple[float, ...], ...]
    left: float
    right: float

    @property
    def degree(self) -> int:
        return len(self.coefficients[0]) - 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The same function in plain numpy (for fitting checks and tests)."""
        out = np.where(x < self.breakpoints[0], self.left, self.right).astype(np.float64)
        for (lo, hi), c in zip(zip(self.breakpoints[:-1], self.breakpoints[1:]), self.coefficients, strict=True):
            inside = (x >= lo) & (x < hi)
            out[inside] = np.polynomial.polynomial.polyval(x[inside], c)
        return out


def fit(f, breakpoints: tuple[float, ...], degree: int, left: float, right: float) -> Piecewise:
    """Least-squares fit on Chebyshev nodes of each segment."""
    coefficients = []
    for lo, hi in itertools.pairwise(breakpoints):
        nodes = np.cos(np.linspace(0, np.pi, 400)) * (hi - lo) / 2 + (hi + lo) / 2
        cheb = np.polynomial.chebyshev.chebfit(nodes, f(nodes), degree)
        coefficients.append(tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb)))
    return Piecewise(tuple(breakpoints), tuple(coefficients), left, right)


def polynomial_terms(powers: list[ArithmeticShare], coefficients: tuple[float, ...]) -> torch.Tensor:
    """sum_k c_k x^k from shares of x, x^2, ... (local), at COEFF_BITS more fractional bits
    than x: the caller truncates once. coefficients[0] is the constant term."""
    f = powers[0].frac_bits
    acc = torch.zeros_like(powers[0].value)
    for power, c in zip(powers, coefficients[1:], strict=True):
        acc = acc + power.value * ring.encode_constant(c, COEFF_BITS)
    if powers[0].party.id == 0:
        acc = acc + ring.encode_constant(coefficients[0], f + COEFF_BITS)
    return acc


async def powers_of(x: ArithmeticShare, degree: int, x2: ArithmeticShare | None = None) -> list[ArithmeticShare]:
    """[x, x^2, ..., x^degree] for degree <= 4, in 4 rounds (x^3 and x^4 concurrently); x2:
    x^2 when the caller has it already."""
    if not 1 <= degree <= 4:
        raise ValueError(f"piecewise polynomials of degree 1 to 4 are supported, not {degree}")
    powers = [x]
    if degree >= 2:
        powers.append(x2 if x2 is not None else await square(x))
    if degree >= 3:
        powers += await asyncio.gather(mul(powers[1], x), square(powers[1]))
    return powers[:degree]


async def _opened_powers(x: ArithmeticShare, degree: int) -> list[ArithmeticShare]:
    """[x, x^2, ..., x^degree], x opened once (masked) for x^2 now and c_1 x later."""
    x = await open_masked(x)
    x2 = await square(x, frac_bits=x.frac_bits) if degree >= 2 else None  # x masked: no opening
    return await powers_of(x, degree, x2)


async def evaluate(x: ArithmeticShare, pw: Piecewise, method: str | None = None) -> ArithmeticShare:
    """pw(x) on shares; exact segment choice, polynomial error as fitted plus a few units."""
    party, f = x.party, x.frac_bits
    with op_label("piecewise"):
        onehot, powers = await asyncio.gather(segment_onehot(x, pw.breakpoints, method), _opened_powers(x, pw.degree))
        # coefficient k of each element's piece (rows: k, columns: inner segments), local
        coefficients = onehot._with(pick(onehot[1:-1], [list(c) for c in zip(*pw.coefficients, strict=True)],
                                         COEFF_BITS), COEFF_BITS)
        # the powers are masked: each product opens only its coefficient (all exact, untruncated)
        terms = await asyncio.gather(*(mul(power, coefficients[k + 1], frac_bits=f + COEFF_BITS)
                                       for k, power in enumerate(powers)))
        terms = sum(terms[1:], terms[0])
        inner = await truncate(terms + coefficients[0]._with(coefficients[0].value << f, f + COEFF_BITS), COEFF_BITS)
        outer = onehot[0] * ring.encode_constant(pw.left, f) + onehot[-1] * ring.encode_constant(pw.right, f)
    return inner + ArithmeticShare(party, outer.value, f, x.dtype)
