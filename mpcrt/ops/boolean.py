"""Boolean operations on XOR-shared bits packed 64 to a word, and bits to ring values."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass

import torch

from mpcrt.binary import BinaryShare
from mpcrt.dealer.kinds import (
    AndTriple,
    MaskedTimesBit,
    MultiAndTriple,
    OpenedRowMasks,
    PrivateAndTriple,
    RandomBits,
    product_subsets,
)
from mpcrt.dealer.packing import unpack_bool
from mpcrt.dealer.request import Request
from mpcrt.messages import spec
from mpcrt.ops.products import open_masked
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, public_share, xor_public


async def and_(x: BinaryShare, y: BinaryShare | torch.Tensor | int) -> BinaryShare:
    """Bitwise AND. With a public operand it is local; with two shares, one round of
    Beaver's protocol over GF(2): 16 bytes sent per 64 ANDs (a word of e and one of d).
    y may have more leading dimensions than x (broadcast): x is then opened once for all
    of them, 8 bytes per 64 ANDs plus x's words."""
    if not isinstance(y, BinaryShare):
        return x.derived(x.value & torch.as_tensor(y, dtype=torch.int64))
    party = x.party
    with op_label("and"):
        mid = party.next_id()
        m = await party.dealer.get(Request(mid, AndTriple(tuple(x.shape), tuple(y.shape))))
        e_mine, d_mine = x.value ^ m.a, y.value ^ m.b
        e_peer, d_peer = await party.exchange([e_mine, d_mine], mid=mid)
    e, d = e_mine ^ e_peer, d_mine ^ d_peer
    # x & y = c ^ (e & b) ^ (d & a) ^ (e & d): party 0 folds the public e & d into e & (b ^ d)
    return x.derived(m.c ^ (e & xor_public(party.id, m.b, d)) ^ (d & m.a))


@dataclass
class OpenedRows:
    """x ^ y[index] for the private operands of an `and_private`, public up to a mask: its
    round made x ^ a and y ^ b public, so x ^ y[index] is public up to a ^ b[index], of which
    party 0 holds a and party 1 b[index] as XOR shares. A carry tree's first level takes its
    propagate rows so, with no opening of their own (`monomials`' known rows)."""

    public: torch.Tensor  # (rows of x, words)
    share: torch.Tensor  # this party's XOR share of the mask
    source: Request  # the private AND's


@dataclass
class OpenedRowSubset:
    """Rows of a `monomials` input already public up to a mask (from `OpenedRows`): their
    public values and this party's mask shares, and for each block of `block` words of a row
    the private AND's operand row it holds (-1: a public constant, mask 0)."""

    rows: tuple[int, ...]
    public: torch.Tensor  # (len(rows), row length)
    share: torch.Tensor
    ids: tuple[tuple[int, ...], ...]
    block: int
    source: Request  # the private AND's

    def spec(self) -> OpenedRowMasks:
        """What the dealer needs to rebuild the masks: the private AND's request, blocks, rows."""
        return OpenedRowMasks(self.source, self.block, tuple(zip(self.rows, self.ids, strict=True)))


async def monomials(party, x: torch.Tensor, terms: tuple[tuple[int, ...], ...],
                    known: OpenedRowSubset | None = None) -> torch.Tensor:
    r"""XOR shares of the AND of the rows of x named by each term (x: this party's XOR shares,
    shape (k, ...)), every term in one round, each row of x opened once: with e = x xor a,
    AND_(i in T) x_i = XOR over S in T of AND_(i in T \ S) e_i & AND_(i in S) a_i, and the
    dealer shares the products of the masks (dealer kind MultiAndTriple). Rows in `known` are public
    up to a mask already and are not opened. Shape (len(terms), ...)."""
    e, mask_rows, mask_products = await open_inputs(party, x, terms, known)
    masks = {(i,): row for i, row in enumerate(mask_rows)}  # known rows: this party's share of the and_private's
    masks.update(zip(product_subsets(terms), mask_products, strict=True))
    opened: dict[tuple[int, ...], torch.Tensor] = {}

    def opened_product(rows: tuple[int, ...]) -> torch.Tensor:
        """AND of the opened rows (sorted), each product made once across all terms."""
        if rows not in opened:
            opened[rows] = e[rows[0]] if len(rows) == 1 else opened_product(rows[:-1]) & e[rows[-1]]
        return opened[rows]

    out = torch.zeros((len(terms), *e.shape[1:]), dtype=e.dtype)
    for z, term in zip(out, terms, strict=True):
        term = tuple(sorted(term))
        for size in range(len(term) + 1):
            for subset in itertools.combinations(term, size):
                rest = tuple(i for i in term if i not in subset)  # the opened rows outside the subset
                if not subset:  # all of the term's rows opened: a public word, party 0's to add
                    if party.id == 0:  # (party 1 would only XOR zeros: a hot loop, no pass for nothing)
                        z ^= opened_product(rest)
                else:
                    z ^= masks[subset] if not rest else opened_product(rest) & masks[subset]
    return out


async def and_private(party, mine: torch.Tensor, shape_x: tuple[int, ...], shape_y: tuple[int, ...],
                      index: list[int]) -> tuple[BinaryShare, OpenedRows]:
    """x & y[index] (rows of y picked by index, one per row of x) as XOR shares, x known to
    party 0 alone and y to party 1 alone (each passes its own as `mine`): with masks each
    known to one party, each party sends only its masked operand, once (one round, a word
    per word of its operand, where a Beaver AND sends two per word of the result). Also
    x ^ y[index], public up to a mask (`OpenedRows`), which the same round paid for."""
    with op_label("and"):
        mid = party.next_id()
        request = Request(mid, PrivateAndTriple(tuple(shape_x), tuple(shape_y), tuple(index)))
        m = await party.dealer.get(request)
        holds_x = party.id == 0  # the roles: party 0 holds x and knows its mask a, party 1 y and b
        own_shape, their_shape = (tuple(shape_x), tuple(shape_y)) if holds_x else (tuple(shape_y), tuple(shape_x))
        if tuple(mine.shape) != own_shape:
            raise ValueError(f"party {party.id}'s operand has shape {tuple(mine.shape)}, expected {own_shape}")
        masked = mine ^ (m.a if holds_x else m.b)
        (peer,) = await party.exchange([masked], mid=mid, expect=[spec(masked.new_empty(their_shape))])
    # x & y = (e ^ a) & (d ^ b) with e = x ^ a, d = y ^ b public
    if holds_x:
        d = peer[index]
        return BinaryShare(party, m.c ^ (masked & d) ^ (m.a & d)), OpenedRows(masked ^ d, m.a, request)
    b = m.b[index]
    return BinaryShare(party, m.c ^ (peer & b)), OpenedRows(peer ^ masked[index], b, request)


async def bit_to_arith(bits: BinaryShare, nbits: int) -> ArithmeticShare:
    """The first `nbits` bits of packed words as ring values 0/1 (integers, frac_bits 0).

    With a random bit r shared both ways, open c = b xor r (nbits/8 bytes each way), then
    b = c + r - 2cr, linear in the arithmetic share of r.
    """
    party = bits.party
    if bits.value.numel() * 64 < nbits:
        raise ValueError(f"{bits.value.numel()} words hold fewer than {nbits} bits")
    with op_label("b2a"):
        mid = party.next_id()
        m = await party.dealer.get(Request(mid, RandomBits(nbits)))
        words = bits.value.reshape(-1)[:m.packed.numel()]
        masked = words ^ m.packed
        (peer,) = await party.exchange([masked], mid=mid)
    c = unpack_bool(masked ^ peer, nbits)
    return ArithmeticShare.integers(party, xor_public_bit(c, m.arith, party.id))


def xor_public_bit(c: torch.Tensor, rho: torch.Tensor, party_id: int) -> torch.Tensor:
    """This party's ring share of c xor rho = c + rho - 2 c rho for public bits c (bools or
    0/1) and ring shares of the bit rho: rho_i where c = 0, [i = 0] - rho_i where c = 1."""
    return torch.where(c.bool(), public_share(party_id, 1) - rho, rho)


@dataclass
class OpenedBit:
    """One packed XOR-shared bit b per element, opened as c = b xor rho for a dealer bit rho
    (`open_bit`): products of b with masked shares are then local (`times_bit`), as often
    as needed (a ReLU's forward and backward), and b as ring shares is local too."""

    c: torch.Tensor  # public bools, in the elements' shape
    rho: torch.Tensor  # this party's ring share of rho
    source: Request  # the RandomBits request that made rho
    party_id: int

    def arith(self) -> torch.Tensor:
        """This party's ring share of b = c + rho - 2 c rho."""
        return xor_public_bit(self.c, self.rho, self.party_id)


async def open_bit(bits: BinaryShare, shape: tuple[int, ...]) -> OpenedBit:
    """Open the first prod(shape) packed bits under a dealer bit each: one round, one bit
    per element."""
    party, n = bits.party, math.prod(shape)
    with op_label("open_bit"):
        mid = party.next_id()
        request = Request(mid, RandomBits(n))
        m = await party.dealer.get(request)
        masked = bits.value.reshape(-1)[:m.packed.numel()] ^ m.packed
        (peer,) = await party.exchange([masked], mid=mid)
    c = unpack_bool(masked ^ peer, n).reshape(shape)
    return OpenedBit(c, m.arith.reshape(shape), request, party.id)


async def times_bit(x: ArithmeticShare, bit: OpenedBit) -> ArithmeticShare:
    """x * b for masked x (ops.products.open_masked) and an opened bit: no communication.
    x b = c x + (1 - 2c) x rho, and x rho = p rho + M rho for x = p + M, the dealer sharing
    M rho (kind MaskedTimesBit). No truncation (b is an integer)."""
    party, opening = x.party, x.opening
    if opening is None:
        raise ValueError("times_bit needs a masked share (open it with ops.open_masked)")
    with op_label("mul_bit"):
        request = Request(party.next_id(), MaskedTimesBit(opening.source, bit.source))
        m_rho = (await party.dealer.get(request)).combine(opening.variant, None)
    x_rho = opening.public * bit.rho + opening.factor * m_rho
    return x.derived(torch.where(bit.c, x.value - x_rho, x_rho), x.frac_bits)


async def times_opened_bit(x: ArithmeticShare, bits: BinaryShare) -> tuple[ArithmeticShare, OpenedBit]:
    """(x * b, b opened) for one packed XOR-shared bit b per element of x (flattened order),
    in one round: b opened under a dealer bit (one bit per element), x under a mask in the
    same round unless it is masked already (8 bytes per element)."""
    x, opened = await asyncio.gather(open_masked(x), open_bit(bits, tuple(x.shape)))
    return await times_bit(x, opened), opened


async def mul_bit(x: ArithmeticShare, bits: BinaryShare) -> tuple[ArithmeticShare, ArithmeticShare]:
    """(x * b, b as ring 0/1): times_opened_bit, the bit as ring shares (local)."""
    product, opened = await times_opened_bit(x, bits)
    return product, ArithmeticShare.integers(x.party, opened.arith())


async def open_inputs(party, x: torch.Tensor, terms: tuple[tuple[int, ...], ...],
                      known: OpenedRowSubset | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The round of `monomials` without its evaluation, for callers that evaluate many terms
    at once (ops.bitpoly): the inputs opened (known rows: their public values), this party's
    XOR share of each input's mask (known rows: of the and_private's), and its shares of the
    mask products, one row per `product_subsets(terms)` entry. Same material, same bytes."""
    spec = MultiAndTriple(tuple(x.shape), terms, None if known is None else known.spec())
    with op_label("and"):
        mid = party.next_id()
        m = await party.dealer.get(Request(mid, spec))
        if known is None:  # every row opened (the common case: no gathers, no copies)
            (e_peer,) = await party.exchange([x ^ m.a], mid=mid)
            return torch.bitwise_xor(e_peer, x).bitwise_xor_(m.a), m.a, m.c  # the peer's frame stays as it came
        fresh = [i for i in range(len(x)) if i not in known.rows]
        e_mine = x[fresh] ^ m.a[fresh]
        (e_peer,) = await party.exchange([e_mine], mid=mid)
    e, masks = torch.empty_like(x), m.a.clone()
    e[fresh] = e_mine ^ e_peer
    e[list(known.rows)] = known.public
    masks[list(known.rows)] = known.share
    return e, masks, m.c
