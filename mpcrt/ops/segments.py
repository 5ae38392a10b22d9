"""Which segment of a partition of the line each element falls in, as a one-hot of shares.

For breakpoints t_1 < ... < t_m the segments are x < t_1, [t_j, t_(j+1)) and x >= t_m:
piecewise polynomials and range conversions select by them. Two ways:

- "lpgan": m independent comparisons [x >= t_j] (ops.compare), then differences; "dcf": one
  opening of x + r, whose key gives [x < t_j] at every breakpoint (x - t_j + r is public).
- "tree" (the default on fast links): the m comparisons share almost all their work. At the
  share's scale every breakpoint T_j is a multiple of 2^v, and x >= T_j exactly when
  y = floor(x / 2^v) >= tau_j = T_j / 2^v. Each party splits its share x_i = H_i 2^v + L_i,
  so y = H_0 + H_1 + c, c the carry of L_0 + L_1 past 2^v: one v-bit carry circuit serves
  all m comparisons (instead of m of 63 bits), entering each as a carry-in. The first and
  last comparisons run on all 64 - v bits of y and are exact for every input; the inner ones
  are only needed between t_1 and t_m, where |y - tau_j| < 2^(w-1) for a small w, so they run
  on the low w bits of y. Outside, their bits are meaningless and are masked by
  inside = [t_1 <= x < t_m] (one AND round on packed bits).
  Sigmoid at f = 16 (13 breakpoints in -8..8, v = 14, w = 7): about 550 ANDs per element,
  where thirteen 63-bit comparisons take 13 x 188.
  Breakpoints that are consecutive powers of two at the share's scale (range conversions)
  need no comparison: the segment is the position of x's leading one (ops.leading), one
  carry network for all bits, 6 rounds and 355 bit rows each way for inv_sqrt's 29 (where
  the comparisons above take 7 and 2285 / 1468), but more Python per call (its circuit is
  built each time): taken where that pays (`policy.leading_pays`: on slow links always, on
  loopback from ~11,000 elements).

Each comparison is the sign of a sum of two privately held values plus a shared carry-in:
MSB(a + b + c) = a_top xor b_top xor carry, carry = G xor (P and c) with (G, P) the
generate/propagate pair of the low bits, combined in a balanced tree (Kogge-Stone's
operator, log depth). Exact for every x with |x - t_j| < 2^63; breakpoints are rounded to
the share's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mpcrt import ring
from mpcrt.binary import BinaryShare
from mpcrt.dealer.packing import bit_slice
from mpcrt.ops.boolean import and_, and_private, bit_to_arith
from mpcrt.ops.carry import CarryGroup, OpenedRowGroups, reduce_carries
from mpcrt.ops.compare import below_dcf, is_non_negative
from mpcrt.ops.leading import leading_onehot, mask_bit_rows, powers_of_two
from mpcrt.ops.policy import leading_pays, segment_method
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, public_share, stack, xor_public


async def segment_onehot(x: ArithmeticShare, breakpoints: Sequence[float], method: str | None = None
                         ) -> ArithmeticShare:
    """Integer shares (scale 0) of shape (m + 1, *x.shape): row 0 [x < t_1], row j
    [t_j <= x < t_(j+1)], row m [x >= t_m]."""
    _check_increasing(breakpoints)
    method = segment_method(x, len(breakpoints), method)
    with op_label(f"segments[{method}]"):
        if method != "tree":
            ge = (await _at_least(x, breakpoints, method)).value  # rows [x >= t_j]
            onehot = torch.empty((len(ge) + 1, *ge.shape[1:]), dtype=torch.int64)
            torch.sub(public_share(x.party.id, 1), ge[0], out=onehot[0])
            torch.sub(ge[:-1], ge[1:], out=onehot[1:-1])
            onehot[-1] = ge[-1]
            return ArithmeticShare.integers(x.party, onehot)
        span = powers_of_two(breakpoints, x.frac_bits)
        onehot = await (leading_onehot(x, *span) if span and leading_pays(x) else _threshold_onehot(x, breakpoints))
        values = await bit_to_arith(BinaryShare(x.party, onehot.value.reshape(-1)), onehot.value.numel() * 64)
        per_row = values.value.reshape(len(breakpoints) + 1, -1)[:, :x.numel()]
        return ArithmeticShare.integers(x.party, per_row.reshape(len(breakpoints) + 1, *x.shape))


async def _at_least(x: ArithmeticShare, breakpoints: Sequence[float], method: str) -> ArithmeticShare:
    """[x >= t_j] for each breakpoint as ring shares, one row each (shape (m, *x.shape)): by
    one DCF opening whose key serves every breakpoint, or m separate comparisons (lpgan)."""
    if method == "dcf":
        return 1 - await below_dcf(x, [ring.encode_constant(t, x.frac_bits) for t in breakpoints])
    return await is_non_negative(stack([x - t for t in breakpoints]), method)


def _mask(bits: int) -> int:
    """The low `bits` bits of an int64 (all 64: -1)."""
    return -1 if bits >= 64 else (1 << bits) - 1


def _trailing_zeros(v: int) -> int:
    return (v & -v).bit_length() - 1 if v else 64


def _check_increasing(breakpoints: Sequence[float]) -> None:
    if list(breakpoints) != sorted(set(breakpoints)):
        raise ValueError(f"breakpoints must increase strictly, got {list(breakpoints)}")


async def threshold_bits(x: ArithmeticShare, breakpoints: Sequence[float]) -> BinaryShare:
    """Packed XOR-shared rows [x >= t_j], shape (m, words), by the tree: rows 0 and m - 1
    exact for every x, the inner ones only where t_1 <= x < t_m (elsewhere meaningless).
    Where x is public up to a mask the dealer knows (a truncation's output), the sum is
    p + factor M instead of x_0 + x_1: its generate and propagate bits come from the mask's
    bits (dealer kind MaskBits) with no round of their own."""
    _check_increasing(breakpoints)
    thresholds = [ring.encode_constant(t, x.frac_bits) for t in breakpoints]
    party = x.party
    m = len(thresholds)
    v = min(62, *(_trailing_zeros(t) for t in thresholds))
    taus = [t >> v for t in thresholds]
    outer_w = 64 - v
    inner_w = min(outer_w, 1 + max(1, taus[-1] - taus[0] - 1).bit_length())
    ow, iw, inner_count = outer_w - 1, inner_w - 1, max(m - 2, 0)
    # The sum a + b, compared with each T_j: a_j = H_a - tau_j and b = H_b, summed with the
    # carry of the low parts. a's rows: the prefix's v, then the outer comparisons' ow each
    # (first, last), then the inner ones' iw each; the inner a_j follow from a_1 by
    # subtracting public constants on the bit rows. b's rows (its low bits, then its high
    # part's) serve every a_j.
    outer_index = [v + i for i in range(ow)]
    index = list(range(v)) + outer_index * min(m, 2) + outer_index[:iw] * inner_count
    opening = x.opening
    if opening is not None:  # a = p, public; b = factor M, XOR-shared bits from the dealer
        a_rows, a_tops = _minuend_rows(opening.public.reshape(-1), v, taus, outer_w, inner_w)
        b = await mask_bit_rows(party, opening)
        b_index = b[:v + ow][index]
        words = b.shape[1]
        g = a_rows & b_index  # generate a_i b_i, propagate a_i xor b_i: XOR shares, a public
        p = xor_public(party.id, b_index, a_rows)
        b_tops = torch.stack([b[v + outer_w - 1]] * min(m, 2) + [b[v + inner_w - 1]] * inner_count)
        tops = xor_public(party.id, b_tops, a_tops)
        opened = None
    else:  # party 0 holds a, party 1 b: each party's share
        share = x.value.reshape(-1)
        if party.id == 0:
            mine, tops = _minuend_rows(share, v, taus, outer_w, inner_w)
        else:
            sliced = _slice_fields([(share & _mask(v), v), ((share >> v) & _mask(outer_w), outer_w)])
            mine = torch.cat([sliced[0], sliced[1][:ow]])
            tops = torch.stack([sliced[1][outer_w - 1]] * min(m, 2) + [sliced[1][inner_w - 1]] * inner_count)
        words = mine.shape[1]
        # generate bits a_i and b_i: each party masks and sends its own rows once; propagate
        # bits a_i xor b_i: each party's own rows are its XOR share
        generate, opened = await and_private(party, mine, (len(index), words), (v + ow, words), index)
        g, p = generate.value, mine if party.id == 0 else mine[index]  # p: public up to a mask already (opened)
    cut = [v, v + min(m, 2) * ow, len(index)]

    def group(start: int, stop: int, shape: tuple[int, ...]) -> CarryGroup:
        known = None if opened is None else OpenedRowGroups.of(opened, start, stop, shape)
        return CarryGroup(g[start:stop].reshape(shape), p[start:stop].reshape(shape), known)

    prefix = group(0, v, (1, v, words)) if v > 0 else None
    groups = [group(cut[0], cut[1], (-1, ow, words))]
    if inner_count:
        groups.append(group(cut[1], cut[2], (inner_count, iw, words)))
    await reduce_carries(party, groups, prefix)
    carries = torch.cat([grp.g[:, 0] for grp in groups])  # first, last, then the inner ones
    order = [0, *range(2, m), 1] if m > 1 else [0]  # back to the breakpoints' order
    return ~BinaryShare(party, (carries ^ tops)[order])  # each party folds in its own top bits; x >= T_j: sign 0


def _minuend_rows(value: torch.Tensor, v: int, taus: list[int], outer_w: int, inner_w: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a_j = H - tau_j (threshold_bits' order: the low v bits, the outer
    comparisons' ow each, the inner ones' iw each) and their top bits, from the value a."""
    m, ow, iw = len(taus), outer_w - 1, inner_w - 1
    low, high = value & _mask(v), value >> v
    outer = [high - taus[0]] + ([high - taus[-1]] if m > 1 else [])
    sliced = _slice_fields([(low, v)] + [(h & _mask(outer_w), outer_w) for h in outer])
    words = sliced[1].shape[1]
    outer_rows = torch.stack(sliced[1:])  # (1 or 2, outer_w, words)
    inner_rows = _minus_public(sliced[1][:inner_w], [tau - taus[0] for tau in taus[1:-1]])
    rows = torch.cat([sliced[0], outer_rows[:, :ow].reshape(-1, words), inner_rows[:, :iw].reshape(-1, words)])
    return rows, torch.cat([outer_rows[:, -1], inner_rows[:, -1]])


def pick(onehot: ArithmeticShare, values: Sequence[float] | Sequence[Sequence[float]], bits: int) -> torch.Tensor:
    """sum_j row_j * values_j at `bits` fractional bits (local): with one-hot rows, a share of
    the value of each element's segment. values: one per row, or k lists of them for k picks
    at once (the result then has a leading dimension k)."""
    several = isinstance(values[0], Sequence)
    table = torch.tensor([[ring.encode_constant(v, bits) for v in row] for row in (values if several else [values])],
                         dtype=torch.int64)
    out = (table @ onehot.value.reshape(len(onehot), -1)).reshape(len(table), *onehot.shape[1:])
    return out if several else out[0]


async def _threshold_onehot(x: ArithmeticShare, breakpoints: Sequence[float]) -> BinaryShare:
    """Packed one-hot rows from the tree's threshold rows (any breakpoints)."""
    return await _onehot_bits(await threshold_bits(x, breakpoints))


async def _onehot_bits(ge: BinaryShare) -> BinaryShare:
    """Packed one-hot rows from the rows ge_j = [x >= T_j]; ge_1 and ge_m are exact, the inner
    ones only where ge_1 and not ge_m (masked there: one AND round when there are inner ones)."""
    m = len(ge.value)
    first, last = ge[0], ge[m - 1]
    if m <= 2:
        inner = [first ^ last] if m == 2 else []
    else:
        inside = first ^ last
        raw = torch.stack([(ge[j] ^ ge[j + 1]).value for j in range(m - 1)])
        masked = await and_(inside, BinaryShare(ge.party, raw))  # inside opened once for all rows
        inner = [masked[j] for j in range(m - 1)]
    rows = [(~first).value, *(r.value for r in inner), last.value]
    return BinaryShare(ge.party, torch.stack(rows))


def _minus_public(rows: torch.Tensor, ds: list[int]) -> torch.Tensor:
    """Bit rows of (R - d) mod 2^len(rows) for each public non-negative d, from the bit rows
    of R: a ripple subtractor on packed words, all d at once (local). Shape (len(ds), *rows.shape)."""
    count = len(ds)
    out = torch.empty((count, *rows.shape), dtype=torch.int64)
    borrow = torch.zeros((count, rows.shape[1]), dtype=torch.int64)
    for i, r in enumerate(rows):
        d = torch.tensor([-((d >> i) & 1) for d in ds], dtype=torch.int64)[:, None]  # all ones where the bit is set
        out[:, i] = r ^ d ^ borrow
        borrow = (~r & (d | borrow)) | (r & d & borrow)
    return out


def _slice_fields(fields: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
    """Bit rows (nbits, words) of each field (non-negative values below 2^nbits), fields packed
    side by side into 64-bit words so that each word is bit-sliced once."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(fields)
    packs: list[list[tuple[int, int]]] = [[]]
    used = 0
    for i, (_, nbits) in enumerate(fields):
        if used + nbits > 64:
            packs.append([])
            used = 0
        packs[-1].append((i, used))
        used += nbits
    for pack in packs:
        if not pack:
            continue
        word = torch.zeros_like(fields[pack[0][0]][0])
        for i, offset in pack:
            word = word | (fields[i][0] << offset)
        width = pack[-1][1] + fields[pack[-1][0]][1]
        rows = bit_slice(word, width)
        for i, offset in pack:
            out[i] = rows[offset:offset + fields[i][1]]
    return out
