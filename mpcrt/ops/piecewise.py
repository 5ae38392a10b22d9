"""Piecewise polynomials on shares, segments chosen by exact comparisons.

f(x) = left for x < t_1, p_j(x) on [t_j, t_(j+1)), right for x >= t_m. All comparisons
[x >= t_j] run as one vectorized sign computation, concurrently with x's opening (masked).

Degree <= 2 (sigmoid, tanh), where the coefficients' rounding allows (`_exact_pieces`):
each piece is one integer polynomial, truncated once, found one of two ways that give the
same bits:
- looked up (`_evaluate_by_lookup`, with the tree, where `policy.lookup_pays`): the
  segment's index opened under a random mask picks a row of a dealer table that makes the
  polynomial local: the tree's rounds + 2, 16 bytes per element besides the tree's, 384
  bytes of table per element;
- selected (`_evaluate_by_selection`, any comparison method): the segment bits as ring
  bits pick each element's coefficients, then one round of products: the tree's rounds +
  4, 40 bytes per element, 40 of material besides the segment bits'.
Otherwise (degree 3 and 4, or a scale where those coefficients would be too coarse) the
integer segment indicators select the coefficients, encoded with COEFF_BITS extra
fractional bits (so a coefficient's rounding is not amplified by x^4), and f(x) = c_0 +
sum_k c_k x^k is one batched product of the d coefficient shares with the d powers and one
truncation: 16d + 8 bytes per element. Outside [t_1, t_m) every c_k is a share of 0, so
even powers that wrapped contribute exactly 0. Rounds: max(comparison, powers) + 2.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import operator
from collections.abc import Awaitable
from dataclasses import dataclass

import numpy as np
import torch

from mpcrt import ring
from mpcrt.binary import BinaryShare
from mpcrt.dealer.kinds import PieceTable
from mpcrt.dealer.packing import unpack_index
from mpcrt.dealer.request import Request
from mpcrt.ops.boolean import bit_to_arith, open_bit, times_bit
from mpcrt.ops.policy import lookup_pays, segment_method
from mpcrt.ops.products import mul, open_masked, square
from mpcrt.ops.segments import pick, segment_onehot, threshold_bits
from mpcrt.ops.truncation import truncate
from mpcrt.scope import child_scope, op_label
from mpcrt.shares import ArithmeticShare, ring_int

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


def polynomial_terms(powers: list[ArithmeticShare], coefficients: tuple[float, ...]) -> ArithmeticShare:
    """sum_k c_k x^k from shares of x, x^2, ... (local), at COEFF_BITS more fractional bits
    than x: the caller truncates once. coefficients[0] is the constant term."""
    terms = [power.times(c, COEFF_BITS) for power, c in zip(powers, coefficients[1:], strict=True)]
    return sum(terms[1:], terms[0]).plus_constant(coefficients[0])


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


async def _opened_powers(x: Awaitable[ArithmeticShare], degree: int) -> list[ArithmeticShare]:
    """[x, x^2, ..., x^degree] from x masked (`_masked_input`): x^2 now and c_1 x later open nothing."""
    x = await x
    x2 = await square(x, frac_bits=x.frac_bits) if degree >= 2 else None  # x masked: no opening
    return await powers_of(x, degree, x2)


def _masked_input(x: ArithmeticShare, frac_bits: int) -> Awaitable[ArithmeticShare]:
    """x at frac_bits, public up to a mask the dealer knows: truncated where it is a
    product's output before its truncation (frac_bits below its scale), else opened masked
    (nothing to do for a truncation's output). One round at most, beside the segments'."""
    if frac_bits < x.frac_bits:
        return truncate(x, x.frac_bits - frac_bits)
    return open_masked(x)


async def evaluate(x: ArithmeticShare, pw: Piecewise, method: str | None = None,
                   lookup: bool | None = None, frac_bits: int | None = None) -> ArithmeticShare:
    """pw(x) on shares; exact segment choice, polynomial error as fitted plus a few units.
    lookup: look the coefficients up (True), select them (False), or as `policy.lookup_pays`
    says where the lookup applies (None). Both ways give the same bits (`_exact_pieces`).
    frac_bits: x is a product's output before its truncation, to be truncated to frac_bits
    (the result's scale). With the DCF the segments read x at its own scale, exactly, while
    it is truncated, so the truncation costs no round of its own; the tree would take a
    level more on the wider low part than the truncation saves, so x is truncated first."""
    f = x.frac_bits if frac_bits is None else frac_bits
    if f > x.frac_bits:
        raise ValueError(f"a share with {x.frac_bits} fractional bits cannot be truncated to {f}")
    method = segment_method(x, len(pw.breakpoints), method)
    if f < x.frac_bits and method != "dcf":
        x = await truncate(x, x.frac_bits - f)
    exact = _exact_pieces(pw, f)
    applies = method == "tree" and exact
    if lookup and not applies:
        raise ValueError(f"the coefficient lookup needs the tree comparison, pieces of degree <= 2 and a scale at "
                         f"which its coefficients stay precise (here: {method}, degree {pw.degree}, "
                         f"f = {x.frac_bits}); pass lookup=None to let the op choose")
    if exact:
        with op_label("piecewise"), child_scope():  # one id of the caller's, whichever way
            last = child_scope()  # the last truncation's: the same step, and material, both ways
            flat = x.reshape(-1)
            masked = asyncio.ensure_future(_masked_input(flat, f))  # one step of the caller's, whichever way
            if applies and (lookup if lookup is not None else lookup_pays(x)):
                out = await _evaluate_by_lookup(flat, masked, f, pw, last)
            else:
                out = await _evaluate_by_selection(flat, masked, f, pw, method, last)
        return out.reshape(x.shape)
    with op_label("piecewise"):
        onehot, powers = await asyncio.gather(segment_onehot(x, pw.breakpoints, method),
                                              _opened_powers(_masked_input(x, f), pw.degree))
        # coefficient k of each element's piece (rows: k, columns: inner segments), local
        coefficients = onehot.derived(pick(onehot[1:-1], [list(c) for c in zip(*pw.coefficients, strict=True)],
                                         COEFF_BITS), COEFF_BITS)
        # the powers are masked: each product opens only its coefficient (all exact, untruncated)
        terms = await asyncio.gather(*(mul(power, coefficients[k + 1], frac_bits=f + COEFF_BITS)
                                       for k, power in enumerate(powers)))
        terms = sum(terms[1:], terms[0])
        inner = await truncate(terms + coefficients[0].lift(f), COEFF_BITS)
    return inner + _outside(onehot, pw, f)


def _exact_pieces(pw: Piecewise, frac_bits: int) -> bool:
    """Whether x's piece is computed as one integer polynomial, truncated once: c_k at
    (2 - k) f + e fractional bits (`_ring_coefficients`), x^2 untruncated, the sum (below
    2^61) truncated by f + e in a step both ways make alike. The lookup and the selection
    then give the same bits: inside [t_1, t_m) they truncate the same integer with the same
    material; outside, the lookup's truncated value is multiplied by the bit 0 and the
    selection's sum is 0, whose truncation is exactly 0 (no borrow: x + 2^62 and 0 agree in
    their low bits). Degree <= 2, where the coefficients' rounding stays under half a unit."""
    return pw.degree <= 2 and len(pw.breakpoints) >= 2 and _lookup_fits(pw, frac_bits)


@functools.cache
def _ring_coefficients(pw: Piecewise, frac_bits: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(c0s, c1s, c2s) of the inner pieces as ring integers, c_k at (2 - k) f + e fractional
    bits (a large coefficient may wrap, the pieces' values do not: the identity holds mod 2^64)."""
    f, e = frac_bits, _lookup_bits(pw, frac_bits)
    return tuple(tuple(ring_int(ring.encode_constant(c[k] if k < len(c) else 0.0, (2 - k) * f + e))
                       for c in pw.coefficients) for k in range(3))  # type: ignore[return-value]


async def _evaluate_by_selection(x: ArithmeticShare, masked: Awaitable[ArithmeticShare], f: int, pw: Piecewise,
                                 method: str, last: child_scope) -> ArithmeticShare:
    """pw(x) for flat x, the coefficients selected: the m + 1 segment bits as ring bits
    (ops.segments) pick each element's c_k (local; 0 outside [t_1, t_m)) while x is masked
    (at f: `masked`); then c_1, c_2 and x^2 (local on masked x) are opened masked in one
    round, the products c_1 x and c_2 x^2 are local, and c_0 + c_1 x + c_2 x^2 is truncated
    once. Rounds: max(segments, 1) + 2."""
    e = _lookup_bits(pw, f)
    onehot, x = await asyncio.gather(segment_onehot(x, pw.breakpoints, method), masked)
    inner_rows = onehot.value[1:-1]  # the ring bits of the inner segments, (m - 1, n)
    picked = torch.tensor(_ring_coefficients(pw, f), dtype=torch.int64) @ inner_rows  # (3, n): c_k per element
    c0, c1, c2 = (x.derived(picked[k], (2 - k) * f + e) for k in range(3))
    if pw.degree == 2:
        x2, c1, c2 = await asyncio.gather(open_masked(await square(x, frac_bits=2 * f)), open_masked(c1),
                                          open_masked(c2))
        products = [(x, c1), (x2, c2)]
    else:
        products = [(x, await open_masked(c1))]
    terms = await asyncio.gather(*(mul(power, c, frac_bits=power.frac_bits + c.frac_bits) for power, c in products))
    with last:
        inner = await truncate(sum(terms, c0), c1.frac_bits)
    return inner + _outside(onehot, pw, f)


def _outside(onehot: ArithmeticShare, pw: Piecewise, frac_bits: int) -> ArithmeticShare:
    """pw's constants outside [t_1, t_m), at frac_bits, from the first and last one-hot rows (local)."""
    return onehot[0].times(pw.left, frac_bits) + onehot[-1].times(pw.right, frac_bits)


@functools.cache
def _lookup_bits(pw: Piecewise, frac_bits: int) -> int:
    """Fractional bits of the x^2 coefficient in the lookup path: the pieces' values, at
    2f + these bits, stay below 2^61 (the truncation's exact range with a bit to spare)."""
    peak = 1.0
    for (lo, hi), c in zip(itertools.pairwise(pw.breakpoints), pw.coefficients, strict=True):
        peak = max(peak, float(np.abs(np.polynomial.polynomial.polyval(np.linspace(lo, hi, 257), c)).max()) * 1.01)
    return 61 - 2 * frac_bits - math.ceil(math.log2(peak))


def _lookup_fits(pw: Piecewise, frac_bits: int) -> bool:
    """Whether the lookup path keeps the coefficients' rounding (c2 at e bits amplified by
    x^2, c1 at f + e by |x|, x within the breakpoints) below half a unit of 2^-f; else the
    segment-selection path, whose coefficients carry COEFF_BITS, is the precise one (sigmoid
    and tanh at f = 16: e = 28, rounding under 2^-22; at f = 20 they take the other path)."""
    e, top = _lookup_bits(pw, frac_bits), max(abs(t) for t in pw.breakpoints)
    return e > 0 and 2.0 ** -(e + 1) * top * top + 2.0 ** -(frac_bits + e + 1) * top < 2.0 ** -(frac_bits + 1)


async def _evaluate_by_lookup(x: ArithmeticShare, masked: Awaitable[ArithmeticShare], f: int, pw: Piecewise,
                              last: child_scope) -> ArithmeticShare:
    """pw(x) for flat x with the segment's coefficients looked up, not selected: the tree's
    threshold bits give the inner segment's index as XOR shares (locally: one-hot rows are
    XORs of neighbouring thresholds, index bits XORs of one-hot rows), which is opened under
    a random XOR mask (dealer kind PieceTable) while x is opened masked; the dealer's table for
    the opened value makes c0 + c1 x + c2 x^2 local, truncated once. Outside [t_1, t_m) the
    index is meaningless: the piece's value is multiplied by the opened bit `inside` (local
    on the truncation's masked output) and the outer constants added from [x < t_1] and
    [x >= t_m] as ring bits, both in the index's round. Rounds: the tree's + 2. x is read
    at its own scale by the tree, at f (`masked`) by the rest."""
    party, n = x.party, x.numel()
    e = _lookup_bits(pw, f)
    m = len(pw.breakpoints)
    bits = max(1, (m - 2).bit_length())  # indices of the m - 1 inner segments
    with op_label("segments[tree]"):  # the label goes with the task; x's opening stays the caller's
        thresholds = asyncio.ensure_future(threshold_bits(x, pw.breakpoints))
    ge, x = await asyncio.gather(thresholds, masked)
    g = ge.value
    onehot = [g[j] ^ g[j + 1] for j in range(m - 1)]  # inner segment j, where t_1 <= x < t_m
    index = torch.stack([functools.reduce(operator.xor, (row for j, row in enumerate(onehot) if j >> i & 1),
                                          torch.zeros_like(g[0])) for i in range(bits)])
    coefficients = _ring_coefficients(pw, f)
    opening = x.opening
    assert opening is not None
    with op_label("lookup"):
        mid = party.next_id()
        table = await party.dealer.get(Request(mid, PieceTable(n, bits, coefficients, opening.factor,
                                                               opening.source)))
        masked = index ^ table.delta
        (peer,), inside, outer = await asyncio.gather(
            party.exchange([masked], mid=mid), open_bit(BinaryShare(party, g[0] ^ g[m - 1]), (n,)),
            bit_to_arith(BinaryShare(party, torch.stack([(~ge[0]).value, g[m - 1]]).reshape(-1)), 2 * g.shape[1] * 64))
    opened = masked ^ peer
    a, b, c = table.pick(unpack_index(opened, n), opening.variant)
    p = opening.public
    with last:
        inner = await truncate(x.derived(torch.addcmul(a, p, torch.addcmul(b, p, c)), 2 * f + e), f + e)
    return await times_bit(inner, inside) + _outside(outer.reshape(2, -1)[:, :n], pw, f)
