"""The round-batching scheduler: rounds, exact bytes, ids across interleavings, stats."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

import mpcrt
from tests.conftest import TRANSPORT_KINDS, run_pair


async def thousand_concurrent_reveals(party: mpcrt.Party):
    x = await party.input(torch.arange(1000, dtype=torch.float32) if party.id == 0 else None, src=0)
    before = party.stats.rounds
    scalars = [mpcrt.ArithmeticShare(party, x.value[i:i + 1], x.frac_bits, x.dtype) for i in range(1000)]
    opened = await asyncio.gather(*(s.reveal() for s in scalars))
    return torch.cat(opened), party.stats.rounds - before, party.stats


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
async def test_1000_concurrent_reveals_cost_exactly_one_round(kind):
    results = await run_pair(thousand_concurrent_reveals, kind=kind)
    for opened, rounds, stats in results:
        assert torch.equal(opened, torch.arange(1000, dtype=torch.float32))
        assert rounds == 1
        reveal = stats.op("reveal")
        assert (reveal.rounds, reveal.messages_sent, reveal.messages_received) == (1, 1000, 1000)
        assert (reveal.bytes_sent, reveal.bytes_received) == (8000, 8000)


async def reveal_sizes(party: mpcrt.Party):
    costs = []
    for n in (1, 10, 1000):
        x = await party.input(torch.ones(n) if party.id == 1 else None, src=1)
        before = (party.stats.bytes_sent, party.stats.bytes_received, party.stats.rounds)
        await x.reveal()
        costs.append((party.stats.bytes_sent - before[0], party.stats.bytes_received - before[1],
                      party.stats.rounds - before[2]))
    return costs


async def test_exact_bytes_per_reveal():
    other, owner = await run_pair(reveal_sizes)
    assert other == [(8, 8, 1), (80, 80, 1), (8000, 8000, 1)]
    # the owner queues its input header and its reveal share in the same tick: one frame
    assert owner == [(8, 8, 0), (80, 80, 0), (8000, 8000, 0)]


async def input_costs(party: mpcrt.Party):
    await party.input(torch.zeros(3, 4) if party.id == 0 else None, src=0)
    return party.stats.op("input").as_dict()


async def test_input_sends_only_a_header_from_the_owner():
    owner, other = await run_pair(input_costs)
    # header: frac_bits, dtype, then the shape (2 dims): 4 int64
    assert owner == {"rounds": 1, "messages_sent": 1, "messages_received": 0, "bytes_sent": 32, "bytes_received": 0}
    assert other == {"rounds": 0, "messages_sent": 0, "messages_received": 1, "bytes_sent": 0, "bytes_received": 32}


async def scrambled(party: mpcrt.Party, seed: int):
    """Each party's tasks sleep different random times, so they run in different orders."""
    rng = random.Random(seed * 10 + party.id)
    values = torch.arange(40, dtype=torch.float64) - 20.5

    async def one(i: int):
        await asyncio.sleep(rng.random() * 0.01)
        x = await party.input(values[i:i + 1] if party.id == i % 2 else None, src=i % 2)
        await asyncio.sleep(rng.random() * 0.01)
        y = x * 3 - 1
        with mpcrt.op_label("inner"):
            await asyncio.sleep(rng.random() * 0.005)
            return await y.reveal()

    return torch.cat(await asyncio.gather(*(one(i) for i in range(40))))


@pytest.mark.parametrize("seed", range(3))
async def test_parties_whose_tasks_run_in_different_orders_still_agree(seed):
    r0, r1 = await run_pair(scrambled, seed)
    expected = (torch.arange(40, dtype=torch.float64) - 20.5) * 3 - 1
    assert torch.equal(r0, expected) and torch.equal(r1, expected)


async def labelled(party: mpcrt.Party):
    x = await party.input(torch.ones(5) if party.id == 0 else None, src=0)
    with mpcrt.op_label("layer1"):
        await asyncio.gather(x.reveal(), (x + 1).reveal())
        with mpcrt.op_label("relu"):
            await x.reveal()
    return party.stats


async def test_stats_by_nested_label():
    for stats in await run_pair(labelled):
        layer = stats.op("layer1")
        assert (layer.rounds, layer.messages_sent, layer.bytes_sent) == (2, 3, 120)
        assert stats.op("layer1/reveal").messages_sent == 2
        assert stats.op("layer1/relu").rounds == 1
        assert stats.op("layer1/relu/reveal").bytes_received == 40
        assert stats.op("nothing").rounds == 0
        assert "layer1/relu/reveal" in stats.table()
        assert stats.as_dict()["by_op"]["layer1"]["messages_received"] == 3
        assert stats.wire_bytes_sent > stats.bytes_sent  # headers are counted on the wire


async def early_and_late(party: mpcrt.Party):
    x = await party.input(torch.tensor([2.5]) if party.id == 0 else None, src=0)
    if party.id == 0:
        await asyncio.sleep(0.05)  # party 1's share arrives early here; party 0's late there
    return await x.reveal()


async def test_early_and_late_messages():
    r0, r1 = await run_pair(early_and_late)
    assert float(r0) == float(r1) == 2.5


async def outside_program(party: mpcrt.Party):
    return party


async def test_exchange_outside_a_program_is_a_clear_error():
    p0, _ = await run_pair(outside_program)
    with pytest.raises(RuntimeError, match="no MPC program"):
        await p0.exchange([torch.zeros(1)])


async def parts_among_other_sends(party: mpcrt.Party):
    t = torch.zeros(3, dtype=torch.int64)
    await (await party.input(torch.zeros(1) if party.id == 0 else None, src=0)).reveal()
    rounds, frames = party.stats.rounds, party.stats.frames_sent

    async def two_ticks():  # one message, then another in the next tick
        first = party.next_id()
        party.send(first, [t])
        await asyncio.sleep(0)
        second = party.next_id()
        party.send(second, [t])
        await party.receive(first)
        await party.receive(second)

    async def in_parts():
        mids = [party.next_id() for _ in range(3)]
        party.send_in_parts([(mid, [t]) for mid in mids])
        for mid in mids:
            await party.receive(mid)

    async def next_tick():
        await asyncio.sleep(0)
        mid = party.next_id()
        party.send(mid, [t])
        await party.receive(mid)

    await asyncio.gather(two_ticks(), in_parts(), next_tick())
    return party.stats.rounds - rounds, party.stats.frames_sent - frames


async def test_parts_of_a_round_leave_as_frames_and_the_next_tick_stays_one_round():
    """send_in_parts: each part its own frame, one round; the messages of the next tick
    still leave as one frame and one round, however the callbacks are ordered."""
    for rounds, frames in await run_pair(parts_among_other_sends):
        assert (rounds, frames) == (2, 4)  # tick 1: 3 frames (2 parts joined by a message), tick 2: 1


def _lying_input(header: list[int]):
    """Party 0 sends `header` as its input's description; party 1 runs party.input."""

    async def program(party):
        if party.id == 0:
            with mpcrt.op_label("input"):
                party.send(party.next_id(), [torch.tensor(header, dtype=torch.int64)])
            await asyncio.sleep(0.05)
            return None
        return await party.input(None, src=0)

    return program


@pytest.mark.parametrize(("header", "problem"), [
    ([16, 99, 2], "dtype index 99"),
    ([16, -1, 2], "dtype index -1"),
    ([8, 0, 2], "torch.float32 with 8 fractional bits, where this job uses 16"),
    ([16, 4, 2], "torch.int64 with 16 fractional bits, where this job uses 0"),
    ([16, 0, -5], "negative size"),
    ([16, 0, 1 << 20, 1 << 20], "elements, above the bound"),
])
async def test_a_peers_lying_input_header_is_refused_naming_the_step(header, problem):
    _, r1 = await run_pair(_lying_input(header))
    assert isinstance(r1, mpcrt.ProgramMismatch), r1
    assert "party 1 refuses party 0's input header" in str(r1) and "'input'" in str(r1) and problem in str(r1)


async def test_an_input_of_another_shape_than_the_receiver_expects_is_refused():
    async def program(party):
        value = torch.ones(2, 4) if party.id == 0 else None
        return await party.input(value, src=0, shape=None if party.id == 0 else (2, 3))

    _, r1 = await run_pair(program)
    assert isinstance(r1, mpcrt.ProgramMismatch) and "shape (2, 4) differs from the expected (2, 3)" in str(r1)

    async def agreeing(party):
        x = await party.input(torch.ones(2, 3) if party.id == 0 else None, src=0, shape=(2, 3))
        return await x.reveal()

    r0, r1 = await run_pair(agreeing)
    assert torch.equal(r0, torch.ones(2, 3)) and torch.equal(r1, torch.ones(2, 3))
