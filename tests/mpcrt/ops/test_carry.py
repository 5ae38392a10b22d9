"""Carry trees (ops.carry) against plain integer addition: the carry out of a + b (+ c_in)."""

from __future__ import annotations

import pytest
import torch

from mpcrt import BinaryShare
from mpcrt.dealer.packing import bit_slice, pack_bits
from mpcrt.ops.carry import CarryGroup, reduce_carries
from tests.conftest import run_pair


def shared_group(party, a: torch.Tensor, b: torch.Tensor, shift: int, bits: int) -> CarryGroup:
    """(G, P) rows of bits shift .. shift + bits - 1 of a + b, held by party 0 (party 1's XOR
    share is 0): the tree's input, whoever computed it."""
    ra, rb = (bit_slice((v >> shift) & ((1 << bits) - 1), bits) for v in (a, b))
    g, p = ra & rb, ra ^ rb
    return CarryGroup(*((t if party.id == 0 else torch.zeros_like(t))[None] for t in (g, p)))


async def carries(party, a: torch.Tensor, b: torch.Tensor, widths: list[int], prefix_bits: int):
    groups = [shared_group(party, a, b, prefix_bits, w) for w in widths]
    prefix = shared_group(party, a, b, 0, prefix_bits) if prefix_bits else None
    rounds = party.stats.rounds
    await reduce_carries(party, groups, prefix)
    used = party.stats.rounds - rounds
    return [await BinaryShare(party, grp.g[0, 0]).reveal() for grp in groups], used


@pytest.mark.parametrize(("widths", "prefix_bits", "rounds"),
                         [([60], 0, 4), ([60, 5, 2, 1], 0, 4), ([17], 0, 3), ([4], 0, 2), ([3], 0, 1),
                          ([40, 6], 14, 4), ([26, 6], 9, 4)])  # the prefix's carry joins late: 26 rows take 3 alone
async def test_carry_out_matches_integer_addition(widths, prefix_bits, rounds):
    g = torch.Generator().manual_seed(len(widths) + prefix_bits)
    a = torch.randint(0, 2 ** 61, (200,), generator=g)
    b = torch.randint(0, 2 ** 61, (200,), generator=g)
    b[:40] = ((1 << 61) - 1) - a[:40]  # long propagate chains: a + b all ones
    b[40:50] = ((1 << 61) - 1) - a[40:50] + 1  # and a carry out of all of them
    for out, used in await run_pair(carries, a, b, widths, prefix_bits):
        carry_in = ((a & ((1 << prefix_bits) - 1)) + (b & ((1 << prefix_bits) - 1))) >> prefix_bits
        for w, got in zip(widths, out, strict=True):
            field = [(v >> prefix_bits) & ((1 << w) - 1) for v in (a, b)]
            assert torch.equal(got, pack_bits(((field[0] + field[1] + carry_in) >> w) & 1))
        assert used == rounds
