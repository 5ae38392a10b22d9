"""GF(2) polynomials over XOR-shared rows (ops.bitpoly): every round's products against
plaintext, each fresh variable opened once a round, known rows free, and prefix networks
giving the carries and prefix products of plaintext additions."""

from __future__ import annotations

import functools
import math
import operator

import pytest
import torch

from mpcrt.binary import BinaryShare
from mpcrt.dealer.packing import bit_slice
from mpcrt.ops import bitpoly
from mpcrt.ops.bitpoly import ONE, ZERO, Rows, times, xor
from mpcrt.ops.boolean import and_private
from tests.conftest import run_pair

WORDS = 4


def random_words(rows: int, seed: int) -> torch.Tensor:
    return torch.randint(-(2 ** 63), 2 ** 63 - 1, (rows, WORDS), generator=torch.Generator().manual_seed(seed))


def plain(poly, values: list[torch.Tensor]) -> torch.Tensor:
    """A polynomial's value from its variables' values (words)."""
    out = torch.zeros(WORDS, dtype=torch.int64)
    for mono in poly:
        out ^= functools.reduce(operator.and_, (values[v] for v in mono), torch.full((WORDS,), -1))
    return out


def random_polys(count: int, variables: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    polys = []
    for _ in range(count):
        monos = set()
        for _ in range(int(torch.randint(1, 5, (), generator=g))):
            size = int(torch.randint(0, 5, (), generator=g))
            monos ^= {frozenset(torch.randperm(variables, generator=g)[:size].tolist())}
        polys.append(frozenset(monos))
    return polys


async def two_rounds(party, fresh: torch.Tensor, a: torch.Tensor, b: torch.Tensor, polys: list):
    """Variables: fresh rows (XOR-shared by the test), then the known rows a ^ b (one
    and_private). Round 1 evaluates polys, round 2 products of round 1's results."""
    mask = random_words(len(fresh), 99)
    _, opened = await and_private(party, a if party.id == 0 else b, tuple(a.shape), tuple(b.shape), list(range(len(a))))
    rows = Rows(party, opened)
    for row in fresh ^ mask if party.id == 0 else mask:
        rows.fresh(row)
    for j in range(len(a)):
        rows.known_row(j, a[j] if party.id == 0 else b[j])
    before = party.stats.bytes_sent
    first = await rows.as_variables(polys)
    sent = party.stats.bytes_sent - before
    second = await rows.evaluate([times(first[i], first[i + 1]) for i in range(0, len(first) - 1, 2)])
    return [rows.share(p) for p in first], second, sent


async def test_products_and_their_products_match_plaintext():
    fresh, a, b = random_words(6, 1), random_words(3, 2), random_words(3, 3)
    values = [*fresh, *(a ^ b)]
    polys = random_polys(24, len(values), 4)
    (lin0, out0, sent), (lin1, out1, _) = await run_pair(two_rounds, fresh, a, b, polys)
    first = [plain(p, values) for p in polys]
    for i in range(0, len(polys) - 1, 2):
        assert torch.equal(out0[i // 2] ^ out1[i // 2], first[i] & first[i + 1])
    for i, (x, y) in enumerate(zip(lin0, lin1, strict=True)):
        assert torch.equal(x ^ y, first[i])
    used = {v for p in polys for mono in p if len(mono) > 1 for v in mono if v < len(fresh)}
    assert sent == 8 * WORDS * len(used)  # each fresh variable of a product opens once; known rows none


async def carries(party, a: torch.Tensor, b: torch.Tensor, width: int):
    rows_a, rows_b = bit_slice(a, width), bit_slice(b, width)
    mine = rows_a if party.id == 0 else rows_b
    g, opened = await and_private(party, mine, tuple(rows_a.shape), tuple(rows_b.shape), list(range(width)))
    rows = Rows(party, opened)
    nodes = [(rows.fresh(g.value[k]), rows.known_row(k, mine[k])) for k in range(width)]
    spans = await bitpoly.prefix(rows, nodes, {j: (True, True) for j in range(width)}, bitpoly.radices(width))
    products = await bitpoly.prefix(rows, [(ZERO, p) for _, p in nodes], {width - 1: (False, True)},
                                    bitpoly.radices(width))
    shares = await rows.evaluate([*(g for g, _ in spans.values()), *(p for _, p in spans.values()),
                                  products[width - 1][1]])
    return BinaryShare(party, torch.stack(shares)).value


def packed(rows: torch.Tensor) -> torch.Tensor:
    """0/1 rows of values, packed 64 to a word."""
    return torch.stack([bit_slice(row, 1)[0] for row in rows])


@pytest.mark.parametrize("width", [1, 3, 16, 30, 62])
async def test_prefix_networks_give_every_carry_of_a_sum(width):
    g = torch.Generator().manual_seed(width)
    a = torch.randint(0, 2 ** width, (256,), generator=g)
    b = torch.randint(0, 2 ** width, (256,), generator=g)
    b[:8] = (2 ** width - 1) - a[:8]  # all propagate: no carry anywhere
    share0, share1 = await run_pair(carries, a, b, width)
    got = share0 ^ share1
    low = [(1 << (j + 1)) - 1 for j in range(width)]
    carry = torch.stack([((a & m) + (b & m) > m).long() for m in low])  # out of bits 0..j
    propagate = torch.stack([((a ^ b) & m) == m for m in low]).long()
    assert torch.equal(got[:width], packed(carry))
    assert torch.equal(got[width:2 * width], packed(propagate))
    assert torch.equal(got[-1], packed(propagate)[-1])


@pytest.mark.parametrize("n", range(1, 65))
def test_radices_cover_the_nodes_in_few_rounds(n):
    fan_ins = bitpoly.radices(n)
    assert math.prod(fan_ins) >= n and all(r <= bitpoly.FAN_IN for r in fan_ins)
    assert len(fan_ins) == math.ceil(math.log(n, bitpoly.FAN_IN) - 1e-9)


def test_polynomial_algebra():
    x, y = frozenset({frozenset({0})}), frozenset({frozenset({1})})
    assert xor(x, x) == ZERO and times(x, x) == x and times(x, ONE) == x
    assert times(xor(ONE, x), x) == ZERO  # (1 + x) x = 0 over GF(2)
    assert times(xor(x, y), xor(x, y)) == xor(x, y)


def test_side_by_side_views_number_alike_however_they_interleave():
    def numbering(order: str):
        rows = Rows(None)
        shared = rows.fresh(torch.tensor([1]))
        views = {name: rows.fork() for name in "ab"}
        made: dict[str, list] = {name: [] for name in "ab"}
        for name in order:  # the event loop may resume the two computations in either order
            value = torch.tensor([len(made[name]) + (10 if name == "b" else 0)])
            made[name].append(times(shared, views[name].fresh(value)))
        adopted = [rows.adopt(views[name], made[name]) for name in "ab"]
        return adopted, [int(s) for s in rows.shares]

    assert numbering("aabb") == numbering("baba") == numbering("bbaa")
    adopted, shares = numbering("abab")
    assert adopted == [[frozenset({frozenset({0, v})}) for v in pair] for pair in ((1, 2), (3, 4))]
    assert shares == [1, 0, 1, 10, 11]
