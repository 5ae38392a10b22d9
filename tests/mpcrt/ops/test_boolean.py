"""Boolean ops on packed XOR shares and bits-to-ring conversion, against plain bit logic."""

from __future__ import annotations

import pytest
import torch

from mpcrt import BinaryShare, ops
from mpcrt.dealer.packing import pack_bits, unpack_bits
from tests.conftest import run_pair

MASK = torch.tensor([0x5DEECE66D, -1, 0, 1 << 62, -(1 << 63)] * 20, dtype=torch.int64)


def xor_shares(party, words: torch.Tensor, mask: torch.Tensor) -> BinaryShare:
    """Test-only sharing: party 0 holds words ^ mask, party 1 holds mask."""
    return BinaryShare(party, words ^ mask if party.id == 0 else mask.clone())


async def logic(party, x: torch.Tensor, y: torch.Tensor):
    X, Y = xor_shares(party, x, MASK[: len(x)]), xor_shares(party, y, MASK.flip(0)[: len(y)])
    anded = await ops.and_(X, Y)
    return [await v.reveal() for v in (anded, X ^ Y, ~X, X ^ 0xFF, X & 0xF0F0, X << 3, X >> 5,
                                       await ops.and_(X, 0x3C))], party.stats.op("and").as_dict()


async def test_logic_matches_plain_bits():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2 ** 63), 2 ** 63 - 1, (100,), generator=g)
    y = torch.randint(-(2 ** 63), 2 ** 63 - 1, (100,), generator=g)
    expected = [x & y, x ^ y, ~x, x ^ 0xFF, x & 0xF0F0, x << 3, (x >> 5) & ((1 << 59) - 1), x & 0x3C]
    for results, cost in await run_pair(logic, x, y):
        for got, want in zip(results, expected, strict=True):
            assert torch.equal(got, want)
        # 100 words = 6,400 ANDs: one round, e and d of 8 bytes per word each way
        assert cost == {"rounds": 1, "messages_sent": 1, "messages_received": 1,
                        "bytes_sent": 1600, "bytes_received": 1600}


def test_pack_and_unpack_bits():
    bits = torch.tensor([1, 0, 1, 1] * 40)
    words = pack_bits(bits)
    assert words.shape == (3,) and torch.equal(unpack_bits(words, 160), bits)
    assert int(pack_bits(torch.ones(64))[0]) == -1


async def to_ring(party, bits: torch.Tensor):
    words = pack_bits(bits)
    shared = xor_shares(party, words, MASK[: len(words)])
    ring = await ops.bit_to_arith(shared, len(bits))
    return await ring.reveal(), ring.frac_bits, party.stats.op("b2a").as_dict()


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
async def test_bits_to_ring_values(n):
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(n))
    words = (n + 63) // 64
    for opened, frac_bits, cost in await run_pair(to_ring, bits):
        assert torch.equal(opened, bits) and frac_bits == 0
        assert cost["rounds"] == 1 and cost["bytes_sent"] == cost["bytes_received"] == 8 * words


async def too_few_words(party):
    return await ops.bit_to_arith(xor_shares(party, torch.zeros(1, dtype=torch.int64), MASK[:1]), 65)


async def test_asking_for_more_bits_than_words_hold():
    results = await run_pair(too_few_words, timeout=2)
    assert all(isinstance(r, ValueError) and "fewer than 65 bits" in str(r) for r in results)


def test_binary_share_type_checks():
    with pytest.raises(TypeError, match="int64 words"):
        BinaryShare(None, torch.zeros(2, dtype=torch.int32))


async def fan_out(party, x: torch.Tensor, ys: torch.Tensor):
    X = xor_shares(party, x, MASK[: x.shape[-1]].expand_as(x).contiguous())
    Y = xor_shares(party, ys, MASK.flip(0)[: ys.shape[-1]].expand_as(ys).contiguous())
    return await (await ops.and_(X, Y)).reveal(), party.stats.op("and").bytes_sent


async def test_an_operand_shared_by_several_ands_is_opened_once():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-(2 ** 63), 2 ** 63 - 1, (3, 10), generator=g)
    ys = torch.randint(-(2 ** 63), 2 ** 63 - 1, (2, 3, 10), generator=g)
    for got, sent in await run_pair(fan_out, x, ys):
        assert torch.equal(got, x & ys)
        assert sent == 8 * (30 + 60)  # x once, each of the two y's once


async def private(party, a: torch.Tensor, b: torch.Tensor, index: list[int]):
    from mpcrt.ops.boolean import and_private

    z, opened = await and_private(party, a if party.id == 0 else b, tuple(a.shape), tuple(b.shape), index)
    return await z.reveal(), party.stats.op("and").bytes_sent, opened


async def test_and_of_privately_held_bits():
    g = torch.Generator().manual_seed(2)
    a = torch.randint(-(2 ** 63), 2 ** 63 - 1, (5, 4), generator=g)  # party 0's
    b = torch.randint(-(2 ** 63), 2 ** 63 - 1, (2, 4), generator=g)  # party 1's, rows reused
    index = [0, 1, 1, 0, 1]
    (got0, sent0, opened0), (got1, sent1, opened1) = await run_pair(private, a, b, index)
    assert torch.equal(got0, a & b[index]) and torch.equal(got1, a & b[index])
    assert (sent0, sent1) == (8 * 20, 8 * 8)  # each party sends its own masked words once
    # the same round made a ^ b[index] public up to a mask the parties hold as XOR shares
    assert torch.equal(opened0.public, opened1.public) and opened0.source == opened1.source
    assert torch.equal(opened0.public ^ opened0.share ^ opened1.share, a ^ b[index])
    assert not torch.equal(opened0.public, a ^ b[index])


async def wrong_shape(party):
    from mpcrt.ops.boolean import and_private

    mine = torch.zeros((2, 3) if party.id == 0 else (4, 3), dtype=torch.int64)  # party 1 declared (1, 3)
    return await and_private(party, mine, (2, 3), (1, 3), [0, 0])


async def test_a_private_operand_of_the_wrong_shape_is_refused():
    outcome = await run_pair(wrong_shape)
    assert isinstance(outcome[1], ValueError) and "expected (1, 3)" in str(outcome[1])


async def products_of_rows(party, rows: torch.Tensor, terms):
    from mpcrt.ops.boolean import monomials

    shares = xor_shares(party, rows, MASK[: rows.numel()].reshape(rows.shape))
    z = await monomials(party, shares.value, terms)
    return await BinaryShare(party, z).reveal(), party.stats.op("and").as_dict()


async def test_monomials_and_several_rows_in_one_round():
    g = torch.Generator().manual_seed(4)
    rows = torch.randint(-(2 ** 63), 2 ** 63 - 1, (5, 7), generator=g)
    rows[0, 0], rows[1, 0], rows[2, 0] = -1, -1, 0  # all ones and all zeros among them
    terms = ((0, 1), (2, 0, 1), (0, 1, 3, 4), (4,), (3, 1, 2, 0, 4))
    want = []
    for term in terms:
        z = rows[term[0]].clone()
        for i in term[1:]:
            z &= rows[i]
        want.append(z)
    for got, cost in await run_pair(products_of_rows, rows, terms):
        assert torch.equal(got, torch.stack(want))
        # every row opened once (5 rows of 7 words), whatever the terms: one round
        assert (cost["rounds"], cost["bytes_sent"], cost["bytes_received"]) == (1, 8 * 35, 8 * 35)


async def products_with_known_rows(party, a: torch.Tensor, b: torch.Tensor, fresh: torch.Tensor):
    """Rows 0-1 of 2 blocks each, from an and_private of a (party 0's) and b (party 1's), 2 x 3
    words: row 0 = (a0 ^ b0, a1 ^ b1), row 1 = (a1 ^ b1, a public 0); rows 2-3 fresh shares."""
    from mpcrt.ops.boolean import OpenedRowSubset, and_private, monomials

    _, opened = await and_private(party, a if party.id == 0 else b, tuple(a.shape), tuple(b.shape), [0, 1])
    mine, zero = (a if party.id == 0 else b), torch.zeros(3, dtype=torch.int64)
    blocks = [(0, 1), (1, -1)]

    def rows(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.cat([t[i] if i >= 0 else zero for i in ids]) for ids in blocks])

    shares = torch.cat([rows(mine), xor_shares(party, fresh, MASK[: fresh.numel()].reshape(fresh.shape)).value])
    known = OpenedRowSubset((0, 1), rows(opened.public), rows(opened.share), tuple(blocks), 3, opened.source)
    before = party.stats.op("and").bytes_sent
    z = await monomials(party, shares, ((0, 1), (0, 2, 3), (1, 2)), known)
    return await BinaryShare(party, z).reveal(), party.stats.op("and").bytes_sent - before


async def test_monomials_take_rows_an_and_private_made_public_without_opening_them():
    g = torch.Generator().manual_seed(5)
    a, b = (torch.randint(-(2 ** 63), 2 ** 63 - 1, (2, 3), generator=g) for _ in range(2))
    fresh = torch.randint(-(2 ** 63), 2 ** 63 - 1, (2, 6), generator=g)
    p = a ^ b
    x = torch.cat([torch.stack([torch.cat([p[0], p[1]]), torch.cat([p[1], torch.zeros(3, dtype=torch.int64)])]),
                   fresh])
    want = torch.stack([x[0] & x[1], x[0] & x[2] & x[3], x[1] & x[2]])
    for got, sent in await run_pair(products_with_known_rows, a, b, fresh):
        assert torch.equal(got, want)
        assert sent == 8 * 12  # only the two fresh rows of 6 words travel


async def times_bit(party, x: torch.Tensor, bits: torch.Tensor, masked: bool):
    X = await party.input(x if party.id == 0 else None, src=0)
    if masked:
        X = await ops.mul(X, 1.0)  # a truncation's output: masked
    shared = xor_shares(party, pack_bits(bits), MASK[: (bits.numel() + 63) // 64])
    sent, rounds = party.stats.bytes_sent, party.stats.rounds
    z, d = await ops.mul_bit(X, shared)
    cost = (party.stats.rounds - rounds, party.stats.bytes_sent - sent)
    return await z.reveal(), await d.reveal(), z.frac_bits, cost


@pytest.mark.parametrize("masked", [False, True])
async def test_mul_bit_gives_the_product_and_the_bit_in_one_round(masked):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 50, generator=g, dtype=torch.float64) * 100
    x.view(-1)[:4] = torch.tensor([0.0, -(2.0 ** -16), 2.0 ** 20, -(2.0 ** 20)])
    bits = torch.randint(0, 2, (150,), generator=g)
    held = torch.round(x * 2 ** 16) / 2 ** 16
    for z, d, frac_bits, (rounds, sent) in await run_pair(times_bit, x, bits, masked):
        assert frac_bits == 16
        assert torch.equal(d.reshape(-1).long(), bits)
        assert torch.equal(z, held * bits.reshape(3, 50))  # exact: no truncation
        # the bits (3 words) and, unless masked already, x (150 elements): one round
        assert (rounds, sent) == (1, 8 * 3 + (0 if masked else 8 * 150))
