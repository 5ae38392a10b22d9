"""Sign and comparison on shares, exact on the ring.

MSB(x) = MSB(x0) xor MSB(x1) xor carry, where carry = [low63(x0) + low63(x1) >= 2^63]
= [a > b] with a = low63(x0), held in the clear by party 0, and b = 2^63 - 1 - low63(x1),
held by party 1: LP-GAN's SecCmp between two privately held values. Their bits are
XOR-shared for free (the other party's share is 0) and bit-sliced: bit i of 64 elements
lives in one word, so each AND below costs 2 bits per element per party.

With G_i = a_i and not b_i (one AND round) and E_i = not (a_i xor b_i) (local):
- method "lpgan": LP-GAN's sequential circuit, from the least significant bit up,
  gt_i = G_i xor (E_i and gt_(i-1)): 62 dependent ANDs, 63 rounds, 125 ANDs per element.
- method "tree": the same (G, E) pairs combined in a tree (ops.carry), three at a time,
  each level in one round: 4 levels, 5 rounds.

- method "dcf": a distributed comparison function from the dealer (function secret
  sharing). Open x + r (one round, 8 bytes per element); with y = low63(x + r),
  MSB(x) = MSB(x + r) xor MSB(r) xor [y < low63(r)], and the DCF gives ring shares of
  MSB(r) xor [y < low63(r)] with no interaction (payload 1 - 2 MSB(r), offset MSB(r)), so
  the sign comes out as ring shares directly. Online: 1 round; offline: about 1.6 KB of
  key per element per party, and 63 AES levels of evaluation.

The result is exact for every ring element; x = 0 is non-negative (MSB 0).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from mpcrt.binary import BinaryShare, PackedBits
from mpcrt.dealer import dcf
from mpcrt.dealer.kinds import MaskedSignKey, MaskedSignKeyMaterial, SignKey, SignKeyMaterial, SignTimesMaskKey
from mpcrt.dealer.packing import bit_slice, pack_bits
from mpcrt.dealer.request import Request
from mpcrt.messages import spec
from mpcrt.ops.boolean import and_, and_private, bit_to_arith, xor_public_bit
from mpcrt.ops.carry import CarryGroup, OpenedRowGroups, reduce_carries
from mpcrt.ops.policy import masked_key_pays, resolve_method
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare, public_share

LOW63 = (1 << 63) - 1
BITS = 63


async def _greater(party, rows: torch.Tensor, method: str) -> BinaryShare:
    """[a > b] per element, packed: `rows` are this party's bit-sliced value (a at party 0,
    b at party 1); the other party's XOR share of each is 0."""
    # G_i = a_i and not b_i: each party masks and sends its own rows once (private inputs)
    mine = rows if party.id == 0 else ~rows
    g, opened = await and_private(party, mine, tuple(rows.shape), tuple(rows.shape), list(range(len(rows))))
    e = BinaryShare(party, mine)  # E_i = a_i xor not b_i: each party's own rows are its share
    if method == "lpgan":
        gt = g[0]
        for i in range(1, BITS):
            gt = g[i] ^ await and_(e[i], gt)
        return gt
    # tree: a neutral most significant leaf (G = 0, E = 1) makes 64 leaves, 4 levels of 3; the
    # E rows are public up to a mask since the and_private's round (the neutral one: public 1)
    ones = torch.full_like(e.value[:1], -1)
    g = torch.cat([g.value, torch.zeros_like(g.value[:1])])
    e = torch.cat([e.value, public_share(party.id, ones)])
    known = OpenedRowGroups.of(opened, 0, BITS, (1, BITS, -1)).with_constant_row(ones[None], first=False)
    tree = CarryGroup(g[None], e[None], known)
    await reduce_carries(party, [tree])
    return BinaryShare(party, tree.g[0, 0])


async def msb(x: ArithmeticShare, method: str | None = None) -> PackedBits:
    """The sign bit of each element (1 for negative): bits in x's shape (revealed as bools,
    as torch's `x < 0`), packed 64 to a word inside."""
    method = resolve_method(x, method, ("lpgan", "tree"))
    if method == "dcf":
        raise ValueError("the dcf method yields the sign as ring shares: use is_non_negative or less_than")
    party = x.party
    with op_label(f"msb[{method}]"):
        flat = x.value.reshape(-1)
        low = flat & LOW63
        carry = await _greater(party, bit_slice(low if party.id == 0 else LOW63 - low, BITS), method)
    # each party folds the sign bit of its own share into its XOR share of the carry
    return PackedBits(party, carry.value ^ pack_bits((flat < 0).long()), tuple(x.shape))


PART = 4_000  # elements in the first frame of a DCF's opening; each later one GROWTH times the last
INLINE_WALKS = 10_000  # key evaluations (elements x points) walked on the event loop, not in a worker thread
GROWTH = 2.5


def _parts(n: int) -> list[tuple[int, int]]:
    """The element ranges of a DCF opening's frames: the first small, so that the walk
    starts early, each next one GROWTH times larger, so that it lands (at 400 Mbit/s, 0.16 us
    per element) before the walk over the one before (0.45 us per element) ends."""
    bounds, lo, size = [], 0, PART
    while lo < n:
        bounds.append((lo, min(n, lo + int(size))))
        lo, size = lo + int(size), size * GROWTH
    return bounds or [(0, 0)]


async def _open_for_dcf(x: ArithmeticShare, kind: type[SignKey], points: Sequence[int] = (0,)
                        ) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
    """Open o = x + r for the dealer's DCF of `kind` (SignKey or SignTimesMaskKey; one
    round): (o, the material, for each public t in `points` this party's shares of
    (1 - 2 MSB(r)) [low63(o - t) < low63(r)] times the payload). With MSB(r) times the
    payload added, that is c_t = MSB(r) xor [low63(o - t) < low63(r)] times it, and
    MSB(x - t) = MSB(o - t) xor c_t: one key per element serves every point, since x - t
    is masked by the same r (a DCF key may be evaluated anywhere; only the outputs' shares
    come of it).

    The opening leaves in parts (_parts), consecutive frames of the one round, and each
    part's keys are queued for a walk as soon as it arrives: one worker thread walks the
    parts back to back (the walk holds no lock), while the event loop takes in the rest
    as a real link delivers it."""
    party = x.party
    flat = x.value.reshape(-1)
    n = flat.numel()
    bounds = _parts(n)
    mids = [party.next_id() for _ in bounds]
    m: SignKeyMaterial = await party.dealer.get(Request(mids[0], kind(n)))
    masked = flat + m.r
    party.send_in_parts([(mid, [masked[lo:hi]]) for mid, (lo, hi) in zip(mids, bounds, strict=True)])
    public = m.correction_words()
    opened = torch.empty_like(masked)
    inline = len(bounds) == 1 and n * len(points) <= INLINE_WALKS  # a short walk: not worth a thread
    walks: list[list[asyncio.Future]] = []
    with contextlib.nullcontext() if inline else ThreadPoolExecutor(1, thread_name_prefix="dcf-walk") as worker:
        try:
            for mid, (lo, hi) in zip(mids, bounds, strict=True):
                (peer,) = await party.receive(mid, [spec(masked[lo:hi])])
                opened[lo:hi] = masked[lo:hi] + peer
                walks.append(_walks(worker, party.id, m.seed, public, [(opened[lo:hi] - t) & LOW63 for t in points],
                                    lo))
            shares = [torch.cat(await asyncio.gather(*parts)) for parts in zip(*walks, strict=True)]
        finally:
            for walk in (w for part in walks for w in part):
                walk.cancel()  # queued walks of a failed op do not start (and a running one ends on its own)
    party.release_later(m)  # freed once this party's next frame has left, not inside the caller
    return opened, m, shares


async def _masked_dcf(x: ArithmeticShare, points: Sequence[int]) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
    """As _open_for_dcf, for x = p + u M with p public (x's Opening): the dealer's key has
    the offset r = -u M, so x + r = p needs no opening (no round, nothing sent); each
    element takes the key of its mask's variant."""
    party, opening = x.party, x.opening
    assert opening is not None
    n = x.numel()
    keys: MaskedSignKeyMaterial = await party.dealer.get(Request(party.next_id(), MaskedSignKey(opening.source,
                                                                                                 opening.factor)))
    m = keys.for_elements(opening.variant, n)
    opened = opening.public.reshape(-1)
    public = m.correction_words()
    inputs = [(opened - t) & LOW63 for t in points]
    if n * len(points) <= INLINE_WALKS:  # a short walk, now: no await, so no tick (and frame) is lost
        shares = dcf.evaluate_points(party.id, m.seed, public, inputs)
    else:  # as _open_for_dcf: a long walk leaves the event loop free
        with ThreadPoolExecutor(1, thread_name_prefix="dcf-walk") as worker:
            shares = list(await asyncio.gather(*_walks(worker, party.id, m.seed, public, inputs, 0)))
    party.release_later(keys, m)
    return opened, m, shares


def _walk(worker: ThreadPoolExecutor, *args: object) -> asyncio.Future:
    """dcf.evaluate(*args) on the worker thread."""
    return asyncio.get_running_loop().run_in_executor(worker, dcf.evaluate, *args)


def _walks(worker: ThreadPoolExecutor | None, party_id: int, seed: torch.Tensor, public: dict[str, torch.Tensor],
           inputs: list[torch.Tensor], start: int) -> list[asyncio.Future]:
    """The keys of elements start.. evaluated at each input: on the worker thread, one walk
    per input, or (worker None: all the keys, few evaluations) now on the event loop, in one
    walk (dcf.evaluate_points)."""
    if worker is not None:
        return [_walk(worker, party_id, seed, public, y, start) for y in inputs]
    assert start == 0, "a walk on the event loop takes all the keys"
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in inputs]
    for future, share in zip(done, dcf.evaluate_points(party_id, seed, public, inputs), strict=True):
        future.set_result(share)
    return done


async def below_dcf(x: ArithmeticShare, points: Sequence[int]) -> ArithmeticShare:
    """[x < t] for each public ring value t in `points` (at x's scale), as ring shares of
    shape (len(points), *x.shape), by the dealer's DCF: one round, one opening and one key
    per element for all the points (exact while |x - t| < 2^63). No round where x is public
    up to a mask the dealer knows and a key per mask variant pays (`policy.masked_key_pays`):
    the key's offset is then the mask itself (MaskedSignKey)."""
    with op_label("msb[dcf]"):
        if x.opening is not None and masked_key_pays(x):
            opened, m, lts = await _masked_dcf(x, points)
        else:
            opened, m, lts = await _open_for_dcf(x, SignKey, points)
    # [x < t] = MSB(x - t) = MSB(opened - t) xor MSB(r), the key giving shares of the carry;
    # every point's row at once (a range conversion asks for 29 or more)
    below = (opened - torch.tensor(points, dtype=torch.int64).unsqueeze(1)) < 0
    carries = torch.stack([lt[:, 0] for lt in lts]).add_(m.msb_r)
    return ArithmeticShare.integers(x.party, xor_public_bit(below, carries, x.party.id).reshape(len(points), *x.shape))


async def _sign_dcf(x: ArithmeticShare) -> ArithmeticShare:
    """MSB(x) as ring shares (0/1, scale 0), by the dealer's DCF: one round."""
    return (await below_dcf(x, [0]))[0]


async def relu_dcf(x: ArithmeticShare) -> tuple[ArithmeticShare, ArithmeticShare]:
    """(x * [x >= 0], [x >= 0]) in one round: the DCF's payload carries the sign times the
    mask r too, so with x = o - r for the opened o, x [x >= 0] = [x >= 0] o - r + MSB(x) r
    is local (Boyle et al., Eurocrypt 2021: ReLU from one masked opening)."""
    party = x.party
    with op_label("msb[dcf]"):
        opened, m, (lt,) = await _open_for_dcf(x, SignTimesMaskKey)
    p = (opened < 0).long()
    c, c_r = m.msb_r + lt[:, 0], m.msb_r_r + lt[:, 1]  # c and c * r
    sign = xor_public_bit(p, c, party.id)
    sign_r = p * m.r + (1 - 2 * p) * c_r  # MSB(x) * r
    ge0 = public_share(party.id, 1) - sign
    product = ge0 * opened - m.r + sign_r
    return x.derived(product.reshape(x.shape), x.frac_bits), ArithmeticShare.integers(party, ge0.reshape(x.shape))


async def _sign(x: ArithmeticShare, method: str | None) -> ArithmeticShare:
    """MSB(x) as ring shares (0/1, scale 0), by any method."""
    method = resolve_method(x, method)
    if method == "dcf":
        return await _sign_dcf(x)
    sign = await msb(x, method)
    return (await bit_to_arith(sign, x.numel())).reshape(x.shape)


async def is_non_negative(x: ArithmeticShare, method: str | None = None) -> ArithmeticShare:
    """1 where x >= 0, else 0, as integer shares (scale 0) of x's shape."""
    with op_label("ge0"):
        return 1 - await _sign(x, method)


async def less_than(x: ArithmeticShare, y, method: str | None = None) -> ArithmeticShare:
    """1 where x < y (y shared or public), as integer shares; exact while |x - y| < 2^63."""
    with op_label("lt"):
        return await _sign(x - y, method)
