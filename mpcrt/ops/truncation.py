"""Truncation after fixed-point products: divide a share by 2^bits.

`dealer` (default): one round, exact up to one unit in the last place for |x| < 2^62.
With r uniform, open c = x + 2^62 + r. Since 0 <= x + 2^62 < 2^63, the sum wrapped past
2^64 exactly when MSB(r) = 1 and MSB(c) = 0, so the wrap is MSB(r) * (1 - MSB(c)), a share
times a public bit; the dealer shares r, r >> bits and MSB(r). Then
  floor((x + 2^62) / 2^bits) = (c >> bits) - (r >> bits) + wrap * 2^(64-bits) - borrow,
with borrow in {0, 1} left out (the one unit), and 2^(62-bits) is subtracted back.

`local` (SecureML): no communication, each party shifts its own share. It is wrong by
about 2^(64-bits) whenever the two shares' integer sum wraps past +-2^63. With shares
x - r and r, r uniform, that happens for r in a window of width |x|: probability
|x| / 2^64 per element, x at the product's scale (tested). At f = 16, a product of
magnitude 10^4 (about 2^45 at scale 2^32) fails about once in 2^19 (half a million)
elements; a training step touches millions, which is what breaks long CrypTen runs.
"""

from __future__ import annotations

import torch

from mpcrt.dealer.kinds import TruncationPair
from mpcrt.dealer.request import MaskRef, Request
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, Opening, plus_public

METHODS = ("dealer", "local")


async def truncate(x: ArithmeticShare, bits: int, method: str | None = None) -> ArithmeticShare:
    """x / 2^bits, as a share with frac_bits reduced by `bits`."""
    if bits == 0:
        return x
    if not 0 < bits <= x.frac_bits:
        raise ValueError(f"cannot truncate {bits} bits off a share with {x.frac_bits} fractional bits")
    method = method or x.party.truncation
    if method == "local":
        return x.derived(_local_shift(x.value, bits, x.party.id), x.frac_bits - bits)
    if method != "dealer":
        raise ValueError(f"truncation method must be one of {METHODS}, got {method!r}")
    party = x.party
    with op_label("trunc"):
        mid = party.next_id()
        request = Request(mid, TruncationPair(tuple(x.shape), bits))
        m = await party.dealer.get(request)
        masked = x.value + m.r  # party 0's mask includes the offset 2^62
        (peer,) = await party.exchange([masked], mid=mid)
    c = masked + peer
    # wrapped = MSB(r) and not MSB(c): the dealer's material has this party's correction
    # -(r >> bits) + wrapped * 2^(64 - bits) (less the offset's 2^(62 - bits) at party 0) both ways
    wrapped = c >= 0
    y = torch.where(wrapped, m.wrapped, m.not_wrapped)
    public = c >> bits
    plus_public(party.id, y, public, out=y)
    # y is public up to the dealer's correction: a later product needs no opening of y
    out = x.derived(y, x.frac_bits - bits)
    out.opening = Opening(MaskRef(request, tuple(x.shape)), wrapped, public)
    return out


def _local_shift(v, bits: int, party_id: int):
    """SecureML's local truncation: party 0 shifts its share, party 1 shifts the negation
    of its own and negates back (then x0 + x1 is x >> bits up to 1, but for a wrap)."""
    return v >> bits if party_id == 0 else -((-v) >> bits)
