"""Segments between consecutive powers of two: the position of x's leading one.

For breakpoints 2^s, 2^(s+1), ..., 2^t at the share's scale (a range conversion's), the
segment of x is read off the bits of x = x_0 + x_1 rather than compared with each
breakpoint: below (x < 2^s: negative, or bits s..63 all zero), bit i leading
(2^i <= x < 2^(i+1), s <= i < t), above (x >= 2^t). With the generate and propagate bits
G_k = a_k b_k, P_k = a_k xor b_k of the two shares' bits (one and_private round, after which
P is public up to a mask: free in products) and C_k the carry into bit k:
- "bits i..j-1 of x are zero" needs no bit of x: bit i is zero when C_i = P_i, and then
  C_(i+1) = G_i xor P_i, so bit i + 1 is zero when Z_(i+1) = 1 xor P_(i+1) xor G_i xor P_i
  (local). So Zero(i, j) = [C_i = P_i] Z_(i+1) ... Z_(j-1), and the products of the Z are
  made while the carries are: inside = Zero(t, 64) = [0 <= x < 2^t], Q_i = Zero(i, t);
- [x >= 0] = not (P_63 xor C_63), with C_63 = G' xor P' C_t for the (G', P') of bits t..62;
- rows: below = [x < 0] xor inside Q_s, bit i = inside (Q_(i+1) xor Q_i), above =
  [x >= 0] xor inside (inside implies x >= 0, and Q_i implies Q_(i+1)).
Four prefix networks run side by side (ops.bitpoly, fan-in 4: the carries C_s..C_t, bits
t..62's (G', P'), the suffix products of the Z below t, their product above t), then one
round makes the rows: 5 rounds with the and_private's (three network rounds for up to 64
nodes), exact for every ring element. For inv_sqrt's 29 breakpoints at f = 16 each party
sends 325 bit rows, where the threshold tree (ops.segments) sends 2255 and 1438.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch

from mpcrt import ring
from mpcrt.binary import BinaryShare
from mpcrt.dealer.kinds import MaskBits
from mpcrt.dealer.packing import bit_slice, pack_bits
from mpcrt.dealer.request import Request
from mpcrt.ops.bitpoly import ONE, ZERO, Poly, Rows, prefix, radices, times, xor
from mpcrt.ops.boolean import and_private
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, Opening, xor_public

BITS = 64


def powers_of_two(breakpoints: Sequence[float], frac_bits: int) -> tuple[int, int] | None:
    """(s, t) when the breakpoints are 2^s, 2^(s+1), ..., 2^t at scale frac_bits, at least
    two, with t < 63 (bit t has a bit above it below the sign); else None."""
    thresholds = [ring.encode_constant(b, frac_bits) for b in breakpoints]
    if len(thresholds) < 2 or thresholds[0] < 1:
        return None
    s = thresholds[0].bit_length() - 1
    t = s + len(thresholds) - 1
    return (s, t) if t <= BITS - 2 and thresholds == [1 << k for k in range(s, t + 1)] else None


async def leading_onehot(x: ArithmeticShare, s: int, t: int) -> BinaryShare:
    """Packed XOR-shared one-hot rows, shape (t - s + 2, words): [x < 2^s], then
    [2^i <= x < 2^(i+1)] for i = s..t-1, then [x >= 2^t] (x a signed ring integer). Where x
    is public up to a mask the dealer knows (x = p + factor M), the sum is p + factor M: the
    generate and propagate bits p AND M, p XOR M come from the mask's bits (mask_bit_rows),
    no private AND round, and the propagate bits are then fresh variables, not known ones."""
    party, opening = x.party, x.opening
    if opening is not None:
        a = bit_slice(opening.public.reshape(-1), BITS)  # public
        b = await mask_bit_rows(party, opening)  # this party's XOR share
        rows = Rows(party)
        gen = [rows.fresh(a[k] & b[k]) for k in range(BITS - 1)]
        prop = [rows.fresh(xor_public(party.id, b[k], a[k])) for k in range(BITS)]
    else:
        bits = bit_slice(x.value.reshape(-1), BITS)
        words = bits.shape[1]
        g, opened = await and_private(party, bits[:-1], (BITS - 1, words), (BITS - 1, words), list(range(BITS - 1)))
        rows = Rows(party, opened)
        gen = [rows.fresh(g.value[k]) for k in range(BITS - 1)]
        prop = [rows.known_row(k, bits[k]) for k in range(BITS - 1)] + [rows.fresh(bits[-1])]
    z = [ONE] + [rows.local(xor(ONE, prop[k], gen[k - 1], prop[k - 1])) for k in range(1, BITS)]
    carry, (high_g, high_p), suffix, zero_above = await _networks(rows, gen, prop, z, s, t)
    equal = {i: rows.local(xor(ONE, carry[i], prop[i])) for i in range(s, t + 1)}  # [C_i = P_i]
    inside = times(equal[t], zero_above)
    q = {i: times(equal[i], suffix[i + 1]) for i in range(s, t)} | {t: ONE}
    non_negative = xor(ONE, prop[-1], high_g, times(high_p, xor(ONE, equal[t], prop[t])))  # C_t = not equal_t xor P_t
    out = await rows.evaluate([xor(ONE, non_negative, times(inside, q[s])),
                               *(times(inside, xor(q[i + 1], q[i])) for i in range(s, t)),
                               xor(non_negative, inside)])
    return BinaryShare(party, torch.stack(out))


async def mask_bit_rows(party, opening: Opening) -> torch.Tensor:
    """This party's XOR share of the bit rows (64, words) of factor M for x = p + factor M
    (x's Opening): the dealer's rows of the mask's first variant and the top rows of its
    second (kind MaskBits), each element's variant picked by its public bit. No round: the
    comparisons of a masked share read these where two private shares need a private AND."""
    with op_label("mask_bits"):
        bits = await party.dealer.get(Request(party.next_id(), MaskBits(opening.source, opening.factor)))
    if opening.variant is None or bits.top is None:
        return bits.rows
    low = BITS - len(bits.top)  # the variants' rows differ only above `low`
    # the material is this step's own (spent once): the rows are picked in place
    bits.rows[low:] ^= (bits.rows[low:] ^ bits.top) & pack_bits(opening.variant.reshape(-1))
    return bits.rows


async def _networks(rows: Rows, gen: list[Poly], prop: list[Poly], z: list[Poly], s: int, t: int
                    ) -> tuple[dict[int, Poly], tuple[Poly, Poly], dict[int, Poly], Poly]:
    """The prefix networks, their rounds shared: the carries C_i for s <= i <= t, (G', P') of
    bits t..62, W_i = Z_i ... Z_(t-1) for s < i <= t (W_t = 1), and Z_(t+1) ... Z_63."""
    ends = list(range(max(s - 1, 0), t))  # C_(j+1) = G of bits 0..j
    high = list(range(t, BITS - 1))
    down = list(range(t - 1, s, -1))  # Z_(t-1) down to Z_(s+1): suffix products as prefix products
    views = [rows.fork() for _ in range(4)]  # side by side, each numbering its own variables
    carries, chain, suffix, above = await asyncio.gather(
        prefix(views[0], list(zip(gen[:t], prop[:t], strict=True)), {j: (True, False) for j in ends}, radices(t)),
        prefix(views[1], [(gen[k], prop[k]) for k in high], {len(high) - 1: (True, True)}, radices(len(high))),
        prefix(views[2], [(ZERO, z[k]) for k in down], {n: (False, True) for n in range(len(down))},
               radices(len(down))),
        prefix(views[3], [(ZERO, z[k]) for k in range(t + 1, BITS)], {BITS - 2 - t: (False, True)},
               radices(BITS - 1 - t)))
    carry_polys = rows.adopt(views[0], [carries[j][0] for j in ends])
    carry = {0: ZERO} | {j + 1: c for j, c in zip(ends, carry_polys, strict=True)}
    high_g, high_p = rows.adopt(views[1], list(chain[len(high) - 1]))
    products = dict(zip(down, rows.adopt(views[2], [suffix[n][1] for n in range(len(down))]), strict=True)) | {t: ONE}
    (zero_above,) = rows.adopt(views[3], [above[BITS - 2 - t][1]])
    return carry, (high_g, high_p), products, zero_above
