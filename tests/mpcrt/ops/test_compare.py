"""Sign and comparison: exact for every ring value, both circuits, with their round counts."""

from __future__ import annotations

import pytest
import torch

from mpcrt import ops
from mpcrt.dealer.packing import bit_slice, unpack_bits
from tests.conftest import run_pair

ULP = 2.0 ** -16


def edge_values() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    near_integers = torch.arange(-20, 21, dtype=torch.float64)
    return torch.cat([
        torch.tensor([0.0, ULP, -ULP, 2 * ULP, -2 * ULP, 2.0 ** 45, -(2.0 ** 45), 2.0 ** 45 - ULP]),
        near_integers + ULP, near_integers - ULP, near_integers,
        torch.randn(3000, generator=g, dtype=torch.float64) * 1000,
        torch.randn(1000, generator=g, dtype=torch.float64) * 1e-3,
    ])


async def signs(party, x: torch.Tensor, method: str):
    X = await party.input(x if party.id == 0 else None, src=0)
    nonneg = await ops.is_non_negative(X, method)
    negative = 1 - await nonneg.reveal()
    if method != "dcf":  # the circuits also give the packed sign bit itself
        bits = await (await ops.msb(X, method)).reveal()
        assert bits.dtype == torch.bool and bits.shape == x.shape  # as torch's x < 0
        assert torch.equal(bits.long(), negative)
    return negative, await nonneg.reveal(), party.stats.op("ge0").as_dict()


@pytest.mark.parametrize(("method", "rounds"), [("tree", 6), ("lpgan", 64), ("dcf", 1)])
async def test_sign_is_exact_for_every_value(method, rounds):
    x = edge_values()
    held = torch.round(x / ULP)  # what the parties hold: |x| < 2^-17 is encoded as 0
    big = x.abs() >= ULP
    for negative, nonneg, cost in await run_pair(signs, x, method):
        assert torch.equal(negative, (held < 0).long())
        assert torch.equal(nonneg, (held >= 0).long())  # 0 counts as non-negative
        assert torch.equal(negative[big], (x[big] < 0).long())  # exact for every |x| >= 2^-f
        assert cost["rounds"] == rounds


async def raw_signs(party, v: torch.Tensor):
    """Ring elements across the whole range, including the ends (-2^63, 2^63 - 1)."""
    from mpcrt import ArithmeticShare

    x = await party.input(v if party.id == 0 else None, src=0)
    x = ArithmeticShare(party, x.value, 0, torch.int64)
    return (await (await ops.msb(x)).reveal()).long()


async def test_sign_over_the_whole_ring():
    g = torch.Generator().manual_seed(1)
    v = torch.cat([torch.tensor([-(2 ** 62) + 1, 2 ** 62 - 1, 0, -1, 1]),
                   torch.randint(-(2 ** 62) + 1, 2 ** 62 - 1, (5000,), generator=g)])
    for negative in await run_pair(raw_signs, v):
        assert torch.equal(negative, (v < 0).long())


async def comparisons(party, x, y):
    X = await party.input(x if party.id == 0 else None, src=0)
    Y = await party.input(y if party.id == 1 else None, src=1)
    return await (await ops.less_than(X, Y)).reveal(), await (await ops.less_than(X, 0.5)).reveal()


async def test_less_than_shared_and_public():
    x = torch.tensor([1.0, -2.0, 0.5, 0.5 - ULP, 3.0, -ULP])
    y = torch.tensor([2.0, -3.0, 0.5, 0.5, 3.0 + ULP, 0.0])
    for lt, lt_half in await run_pair(comparisons, x, y):
        assert torch.equal(lt, (x < y).long()) and torch.equal(lt_half, (x < 0.5).long())


def test_bit_slicing_layout():
    v = torch.tensor([5, 2, 7] * 30)
    rows = bit_slice(v, 3)
    assert rows.shape == (3, 2)
    for i in range(3):
        assert torch.equal(unpack_bits(rows[i], 90), (v >> i) & 1)


async def bad_method(party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    return await ops.msb(x, "magic")


async def test_unknown_method():
    results = await run_pair(bad_method, timeout=2)
    assert any(isinstance(r, ValueError) and "must be one of" in str(r) for r in results)


async def dcf_signs_over_the_ring(party, v: torch.Tensor):
    from mpcrt import ArithmeticShare

    x = await party.input(v if party.id == 0 else None, src=0)
    x = ArithmeticShare(party, x.value, 0, torch.int64)
    return await (await ops.less_than(x, 0, "dcf")).reveal()


async def test_dcf_sign_over_the_whole_ring():
    g = torch.Generator().manual_seed(4)
    v = torch.cat([torch.tensor([-(2 ** 62) + 1, 2 ** 62 - 1, 0, -1, 1]),
                   torch.randint(-(2 ** 62) + 1, 2 ** 62 - 1, (3000,), generator=g)])
    for negative in await run_pair(dcf_signs_over_the_ring, v):
        assert torch.equal(negative, (v < 0).long())


async def comparisons_of_masked_shares(party, v: torch.Tensor, points: list[float]):
    """below_dcf of a truncation's output (two mask variants), and of the negated opening
    of a share opened ahead (factor -1): (results, rounds and bytes sent by the comparisons,
    the kinds of their material)."""
    from mpcrt.ops.compare import below_dcf

    x = await party.input(v if party.id == 0 else None, src=0)
    truncated = await ops.truncate(x.lift(8), 8)  # x again, as a truncation's output
    negated = -(await ops.open_masked(x))
    assert truncated.opening.variant is not None and negated.opening.factor == -1
    kinds = []
    recorded = party.dealer.get

    async def get(request):
        kinds.append(request.kind)
        return await recorded(request)

    party.dealer.get = get
    before = party.stats.rounds, party.stats.bytes_sent
    at = [round(t * 2 ** x.frac_bits) for t in points]
    below = [await below_dcf(truncated, at), await below_dcf(negated, at)]
    cost = party.stats.rounds - before[0], party.stats.bytes_sent - before[1]
    return [await b.reveal() for b in below], cost, kinds


async def test_a_dcf_keyed_by_the_mask_of_a_masked_share_opens_nothing():
    """x public up to a mask the dealer knows: the key's offset is that mask (MaskedSignKey),
    one key per variant, and [x < t] comes with no round and no byte sent, exact on both
    sides of every point and for both of a truncation's variants."""
    points = [-2.0, -0.5, 0.0, 0.25, 3.0]
    v = torch.tensor([-5.0, -2.0, -1.0, -0.5, -2 ** -16, 0.0, 2 ** -16, 0.25, 1.0, 3.0, 7.5] * 2)
    for (truncated, negated), cost, kinds in await run_pair(comparisons_of_masked_shares, v, points):
        for t, row_t, row_n in zip(points, truncated, negated, strict=True):
            assert torch.equal(row_t, (v < t).long())
            assert torch.equal(row_n, (-v < t).long())
        assert cost == (0, 0) and kinds == ["masked_sign_key"] * 2


async def test_a_long_masked_walk_leaves_the_event_loop_and_gives_the_same_bits():
    """Past INLINE_WALKS key evaluations the masked key's walks run in a worker thread, as
    an opened DCF's do (material fetched ahead: the masked key pays at any size)."""
    from mpcrt.ops.compare import INLINE_WALKS

    points = [-2.0, -0.5, 0.0, 0.25, 3.0]
    g = torch.Generator().manual_seed(6)
    v = torch.round(torch.randn(3000, generator=g, dtype=torch.float64) * 3 * 2 ** 16) / 2 ** 16
    assert v.numel() * len(points) > INLINE_WALKS
    ahead = [{"prefetched": True}] * 2
    for (truncated, negated), cost, kinds in await run_pair(comparisons_of_masked_shares, v, points,
                                                            party_options=ahead, timeout=60):
        for t, row_t, row_n in zip(points, truncated, negated, strict=True):
            assert torch.equal(row_t, (v < t).long()) and torch.equal(row_n, (-v < t).long())
        assert cost == (0, 0) and kinds == ["masked_sign_key"] * 2


def test_the_automatic_choice_follows_the_network():
    from types import SimpleNamespace

    from mpcrt.ops.policy import choose_method
    from transports import PRESETS

    loopback, wan = SimpleNamespace(network=None), SimpleNamespace(network=PRESETS["wan"])
    assert choose_method(loopback, 20) == "dcf"  # one round of about 1 ms where the tree takes 5
    assert choose_method(loopback, 1_000) == "tree"  # the DCF's keys cost more than 4 rounds here
    assert choose_method(loopback, 3_000_000) == "lpgan"  # fewer bytes and less CPU per element, rounds cheap
    assert choose_method(wan, 1_000) == "dcf"  # one round instead of five at 40 ms
    assert choose_method(wan, 100_000) == "tree"  # the DCF's keys cost more than 4 RTTs
    assert choose_method(wan, 100, ("lpgan", "tree")) == "tree"
    # material from an offline phase: only the online phase is weighed
    loopback.prefetched = wan.prefetched = True
    assert choose_method(wan, 100_000) == "dcf"  # 1 round of 40 ms RTT where the tree takes 5
    assert choose_method(wan, 1_000_000) == "tree"  # the walk's CPU outgrows 4 RTTs
    assert choose_method(loopback, 1_000) == "dcf"
    assert choose_method(loopback, 100_000) == "tree"  # rounds are cheap: the walk's CPU decides


def test_the_automatic_choice_weighs_material_on_the_owners_declared_link():
    from types import SimpleNamespace

    from mpcrt.ops.policy import choose_method
    from transports import PRESETS

    for prefetched in (False, True):  # prefetched or streamed, the material crosses the owner's link once
        def servers(owner, prefetched=prefetched):
            return SimpleNamespace(network=PRESETS["wan"], owner_network=owner, prefetched=prefetched)

        assert choose_method(servers(None), 1_000) == "dcf"  # one round instead of five at 40 ms
        assert choose_method(servers(PRESETS["lan"]), 1_000) == "dcf"  # 1.5 MB of keys take 12 ms at 1 Gbit/s
        assert choose_method(servers(PRESETS["mobile"]), 1_000, ("lpgan", "dcf")) == "dcf"  # 64 rounds cost more
    # behind a mobile owner link (40 Mbit/s, 80 ms) the DCF's keys take 0.3 s: material streamed ahead, the
    # tree's five more rounds cost less; on demand, each of the tree's rounds also waits 80 ms for the dealer
    mobile = SimpleNamespace(network=PRESETS["wan"], owner_network=PRESETS["mobile"], prefetched=True)
    assert choose_method(mobile, 1_000) == "tree"
    mobile.prefetched = False
    assert choose_method(mobile, 1_000) == "dcf"


async def auto_choice(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    await ops.is_non_negative(X)
    return sorted(label for label in party.stats.by_op if label.startswith("ge0/msb[") and label.endswith("]"))


def test_both_parties_choose_alike_and_stats_show_it():
    import mpcrt

    small, large = torch.randn(100), torch.randn(200_000)
    assert mpcrt.run_local(auto_choice, small, network="wan") == (["ge0/msb[dcf]"], ["ge0/msb[dcf]"])
    assert mpcrt.run_local(auto_choice, large) == (["ge0/msb[tree]"], ["ge0/msb[tree]"])


def test_with_an_offline_phase_the_choice_weighs_the_online_phase_alone():
    import mpcrt

    x = torch.randn(20_000)  # the DCF's keys would cost 0.3 s to make: on demand, the tree's 4 more rounds are cheaper
    assert mpcrt.run_local(auto_choice, x, network="wan") == (["ge0/msb[tree]"], ["ge0/msb[tree]"])
    # the dry run recording the plan chooses as the prefetched run does: the plan fits it
    r0, r1 = mpcrt.run_local(auto_and_dealer_waits, x, network="wan", offline=True)
    assert r0 == r1 == (["ge0/msb[dcf]"], 0)


async def auto_and_dealer_waits(party, x):
    """The methods chosen, and how many requests went to the dealer during the program."""
    before = party.stats.offline.requests
    labels = await auto_choice(party, x)
    return labels, party.stats.offline.requests - before


async def relu_in_parts(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    await X.reveal()  # the input's frame has left
    frames, rounds = party.stats.frames_sent, party.stats.rounds
    y, bit = await ops.compare.relu_dcf(X)
    used = (party.stats.frames_sent - frames, party.stats.rounds - rounds)
    return await y.reveal(), await bit.reveal(), used


async def test_a_dcf_opening_in_parts_is_one_round_of_several_frames(monkeypatch):
    monkeypatch.setattr(ops.compare, "PART", 20)
    x = torch.cat([torch.tensor([0.0, -1e-5, 1e-5, -3.0]), torch.randn(346) * 10])
    for y, bit, (frames, rounds) in await run_pair(relu_in_parts, x):
        held = torch.round(x * 2**16) / 2**16
        assert torch.equal(y, torch.relu(held)) and torch.equal(bit, (held >= 0).long())
        assert (frames, rounds) == (4, 1)  # 350 elements in parts of 20, 50, 125 and 155: one round


async def dcf_on_nothing(party):
    X = await party.input(torch.zeros(0) if party.id == 0 else None, src=0)
    y = await ops.relu(X, "dcf")
    return tuple((await y.reveal()).shape), tuple((await ops.is_non_negative(X, "dcf")).shape)


async def test_the_dcf_takes_no_elements():
    assert await run_pair(dcf_on_nothing) == [((0,), (0,))] * 2


async def signs_of_a_matrix(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    return await (await ops.msb(X)).reveal()


async def test_msb_gives_bits_in_the_shape_of_x():
    x = torch.tensor([[1.0, -2.0, 0.0], [-0.5, 3.0, -7.0]])
    for bits in await run_pair(signs_of_a_matrix, x):
        assert torch.equal(bits, x < 0)
