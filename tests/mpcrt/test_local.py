"""run_local: both parties on this machine, in one loop or two processes; errors carry the party id."""

from __future__ import annotations

import os

import pytest
import torch

import mpcrt


async def weighted(party: mpcrt.Party, n: int):
    a = await party.input(torch.linspace(-1, 1, n) if party.id == 0 else None, src=0)
    b = await party.input(torch.full((n,), 0.5) if party.id == 1 else None, src=1)
    return await (a * 4 - b).reveal(), party.stats.rounds


EXPECTED = torch.linspace(-1, 1, 50) * 4 - 0.5


@pytest.mark.parametrize(("transport", "network", "tls"), [
    ("memory", None, True), ("tcp", None, True), ("tcp", None, False), ("memory", "lan", True),
    ("tcp", {"bandwidth_mbps": 1000, "rtt_ms": 2}, True),
])
def test_run_local_everywhere(transport, network, tls):
    (r0, rounds0), (r1, _) = mpcrt.run_local(weighted, 50, transport=transport, network=network, tls=tls)
    assert torch.allclose(r0, EXPECTED, atol=2 * 2 ** -16) and torch.equal(r0, r1)
    assert rounds0 == 2


def test_run_local_in_two_processes():
    (r0, _), (r1, _) = mpcrt.run_local(weighted, 50, processes=True, timeout=20)
    assert torch.allclose(r0, EXPECTED, atol=2 * 2 ** -16) and torch.equal(r0, r1)


async def fails_in_party_1(party: mpcrt.Party):
    x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
    if party.id == 1:
        raise KeyError("missing weights")
    return await x.reveal()


@pytest.mark.parametrize("processes", [False, True])
def test_the_failing_party_is_named(processes):
    with pytest.raises(KeyError, match="missing weights") as info:
        mpcrt.run_local(fails_in_party_1, processes=processes, timeout=20)
    assert info.value.party_id == 1
    assert "(raised by party 1)" in info.value.__notes__
    assert any("party 0 saw: PeerAborted" in note for note in info.value.__notes__)


async def dies(party: mpcrt.Party):
    x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
    if party.id == 1:
        os._exit(3)  # a crash: no exception, no goodbye
    return await x.reveal()


def test_a_party_process_that_dies():
    with pytest.raises(mpcrt.PeerLost) as info:
        mpcrt.run_local(dies, processes=True, timeout=20)
    assert "party 0 lost its connection to party 1" in str(info.value) or "ended without a result" in str(info.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'memory' or 'tcp'"):
        mpcrt.run_local(weighted, 1, transport="udp")
    with pytest.raises(ValueError, match="unknown network preset"):
        mpcrt.run_local(weighted, 1, network="5g")

    async def local_program(party):
        return 1

    with pytest.raises(TypeError, match="module level"):
        mpcrt.run_local(local_program, processes=True)


def test_wrap_puts_a_transport_of_ones_own_around_each_link():
    from transports import Transport

    seen: dict[int, int] = {0: 0, 1: 0}

    class Counting(Transport):
        def __init__(self, party_id, inner):
            self.party_id, self.inner = party_id, inner
            self.counters, self.max_frame_bytes = inner.counters, inner.max_frame_bytes

        def send(self, frame):
            seen[self.party_id] += 1
            self.inner.send(frame)

        async def recv(self, timeout=None):
            return await self.inner.recv(timeout)

        async def close(self):
            await self.inner.close()

        @property
        def closed(self):
            return self.inner.closed

    async def program(party):
        x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
        return await x.reveal()

    r0, _ = mpcrt.run_local(program, wrap=Counting)
    assert r0.tolist() == [1.0, 1.0]
    assert seen[0] >= 3 and seen[1] >= 3  # hello, the data, bye


async def signs_and_waits(party: mpcrt.Party, n: int):
    x = await party.input(torch.linspace(-1, 1, n) if party.id == 0 else None, src=0)
    signs = await (await mpcrt.ops.is_non_negative(x)).reveal()
    return signs, sorted(party.stats.by_op), party.stats.offline.seconds


def test_the_owners_link_is_weighed_by_auto_and_simulated_on_the_dealer_service():
    """On wan, 1,000 comparisons take the DCF (one round); behind a declared 10 Mbit/s owner
    link its 1.5 MB of keys would take 1.2 s, so they take the tree, whose 47 KB of material
    still take at least its 38 ms on the simulated link."""
    n = 1_000
    slow = {"bandwidth_mbps": 10, "rtt_ms": 50}
    (signs, labels, _), _ = mpcrt.run_local(signs_and_waits, n, network="wan", dealer="service")
    assert torch.equal(signs, (torch.linspace(-1, 1, n) >= 0).float()) and any("dcf" in label for label in labels)
    (signs, labels, _), (_, _, waited) = mpcrt.run_local(signs_and_waits, n, network="wan", dealer="service",
                                                         owner_network=slow)
    assert torch.equal(signs, (torch.linspace(-1, 1, n) >= 0).float())
    assert not any("dcf" in label for label in labels) and any("tree" in label for label in labels)
    assert waited >= 46_800 * 8 / 10e6 + 0.05  # party 1's material on the link, and its round trip
