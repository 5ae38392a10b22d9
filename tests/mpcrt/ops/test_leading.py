"""Segments at consecutive powers of two (ops.leading): exact for every ring element, and
chosen by segment_onehot's tree only for such breakpoints."""

from __future__ import annotations

import pytest
import torch

from mpcrt.dealer.packing import unpack_bool
from mpcrt.ops import leading, policy, segments
from mpcrt.shares import ArithmeticShare
from tests.conftest import run_pair
from transports import PRESETS

F = 16
SPANS = [(2, 30), (9, 27), (11, 43), (0, 1), (0, 62), (61, 62), (5, 6), (0, 5), (30, 62), (40, 44)]


def ring_values() -> torch.Tensor:
    """Every power of two and its neighbours, both signs, the ring's ends, and random values
    of every magnitude."""
    g = torch.Generator().manual_seed(3)
    values = [0, 1, -1, 2 ** 63 - 1, -(2 ** 63), -(2 ** 63) + 1]
    for k in range(63):
        p = 1 << k
        values += [p, p - 1, p + 1, -p, -p - 1, -p + 1, 3 * p if k < 61 else p]
    magnitudes = torch.randint(0, 63, (2000,), generator=g)
    random = torch.randint(-(2 ** 62), 2 ** 62, (2000,), generator=g) >> magnitudes
    return torch.cat([torch.tensor(values), random])


def expected(values: torch.Tensor, s: int, t: int) -> torch.Tensor:
    index = sum((values >= (1 << k)).long() for k in range(s, t + 1))
    return torch.nn.functional.one_hot(index, t - s + 2).t()


async def onehot_bits(party, values: torch.Tensor, s: int, t: int) -> torch.Tensor:
    mask = torch.randint(-(2 ** 63), 2 ** 63 - 1, values.shape, generator=torch.Generator().manual_seed(5))
    x = ArithmeticShare(party, values - mask if party.id == 0 else mask, F, torch.float64)
    return (await leading.leading_onehot(x, s, t)).value


@pytest.mark.parametrize(("s", "t"), SPANS)
async def test_exact_for_every_ring_element(s, t):
    values = ring_values()
    share0, share1 = await run_pair(onehot_bits, values, s, t, timeout=60)
    got = torch.stack([unpack_bool(row, len(values)) for row in share0 ^ share1]).long()
    assert torch.equal(got, expected(values, s, t))


@pytest.mark.parametrize(("breakpoints", "span"), [
    ([2.0 ** j for j in range(-14, 15)], (2, 30)),  # inv_sqrt's
    ([2.0 ** j for j in range(-7, 12)], (9, 27)),  # reciprocal's
    ([2.0 ** -16, 2.0 ** -15], (0, 1)),
    ([2.0 ** 45, 2.0 ** 46], (61, 62)),
    ([2.0 ** 46, 2.0 ** 47], None),  # 2^63: the sign bit
    ([2.0 ** -17, 2.0 ** -16], None),  # below one unit
    ([2.0 ** j for j in range(-14, 15, 2)], None),  # powers of four
    ([1.0], None),
    ([], None),
    ([-2.0, -1.0], None),
    ([1.0, 2.0, 3.0], None),
    ([0.0, 1.0], None),
])
def test_only_consecutive_powers_of_two_take_the_leading_one(breakpoints, span):
    assert leading.powers_of_two(breakpoints, F) == span


async def segment_cost(party, values: torch.Tensor, breakpoints):
    x = ArithmeticShare(party, values if party.id == 0 else torch.zeros_like(values), F, torch.float64)
    before = (party.stats.rounds, party.stats.bytes_sent)
    await segments.segment_onehot(x, breakpoints, "tree")
    return party.stats.rounds - before[0], party.stats.bytes_sent - before[1]


async def test_the_roots_segments_take_six_rounds_and_355_rows():
    n, breakpoints = 640, [2.0 ** j for j in range(-14, 15)]
    wan = [{"network": PRESETS["wan"]}] * 2  # declared only: the leading one pays there
    for rounds, sent in await run_pair(segment_cost, torch.arange(n), breakpoints, party_options=wan):
        # and_private (63 rows), three network rounds and the rows' (262), bit to ring (30):
        # the threshold tree takes 7 rounds and 2285 / 1468 rows
        assert (rounds, sent) == (6, 355 * 8 * n // 64)


async def test_on_loopback_small_inputs_keep_the_threshold_tree():
    n, breakpoints = 640, [2.0 ** j for j in range(-14, 15)]
    outcomes = await run_pair(segment_cost, torch.arange(n), breakpoints)
    # the leading one's 12 ms of Python per call would outweigh what it saves here
    assert outcomes == [(7, rows * 8 * n // 64) for rows in (2285, 1468)]


def test_the_leading_one_pays_on_slow_links_and_for_large_inputs():
    from types import SimpleNamespace

    def pays(network, n):
        return policy.leading_pays(SimpleNamespace(party=SimpleNamespace(network=network), numel=lambda: n))

    assert pays(PRESETS["wan"], 1) and pays(PRESETS["mobile"], 1)  # a round of 20 ms or more
    assert not pays(None, 5_000) and pays(None, 20_000)  # loopback: bytes and CPU per element decide
    # fetched ahead: its material is 395 bytes smaller on the owner's link
    owner = SimpleNamespace(network=None, owner_network=PRESETS["mobile"], prefetched=True)
    assert policy.leading_pays(SimpleNamespace(party=owner, numel=lambda: 5_000))
    assert not policy.leading_pays(SimpleNamespace(party=owner, numel=lambda: 100))
    # made on demand, the round it saves is also a dealer round trip on that link
    on_demand = SimpleNamespace(network=None, owner_network=PRESETS["mobile"], prefetched=False)
    assert policy.leading_pays(SimpleNamespace(party=on_demand, numel=lambda: 100))
