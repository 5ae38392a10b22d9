"""Boolean operations on XOR-shared bits packed 64 to a word, and bits to ring values."""

from __future__ import annotations

import torch

from mpcrt.binary import BinaryShare
from mpcrt.dealer.material import Request, unpack_bits
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare


async def and_(x: BinaryShare, y: BinaryShare | torch.Tensor | int) -> BinaryShare:
    """Bitwise AND. With a public operand it is local; with two shares, one round of
    Beaver's protocol over GF(2): 8 bytes sent per 64 ANDs (two words of e and d)."""
    if not isinstance(y, BinaryShare):
        return x._like(x.value & torch.as_tensor(y, dtype=torch.int64))
    party = x.party
    with op_label("and"):
        mid = party.next_id()
        m = await party.dealer.get(Request("and", mid, "", (tuple(x.shape),)))
        e_mine, d_mine = x.value ^ m["a"], y.value ^ m["b"]
        e_peer, d_peer = await party.exchange([e_mine, d_mine], mid=mid)
    e, d = e_mine ^ e_peer, d_mine ^ d_peer
    z = m["c"] ^ (e & m["b"]) ^ (d & m["a"])
    if party.id == 0:
        z = z ^ (e & d)
    return x._like(z)


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
        m = await party.dealer.get(Request("bits", mid, "", (nbits,)))
        words = bits.value.reshape(-1)[:m["packed"].numel()]
        masked = words ^ m["packed"]
        (peer,) = await party.exchange([masked], mid=mid)
    c = unpack_bits(masked ^ peer, nbits)
    r = m["arith"]
    value = torch.where(c.bool(), -r, r)  # r - 2cr
    if party.id == 0:
        value = value + c
    return ArithmeticShare(party, value, 0, torch.int64)
