"""Every failure surfaces as a clear exception on both parties within the timeout.

Run over memory, TCP and TLS (and the simulator for the timing-sensitive ones).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

import mpcrt
from mpcrt.messages import MalformedFrame
from tests.conftest import run_pair
from transports import PRESETS

KINDS = ["memory", "tcp", "tcp+tls", "wan+tcp"]
CONSEQUENCES = mpcrt.PeerAborted | mpcrt.ProgramMismatch | mpcrt.PeerLost


def assert_both_failed(results, cause: type, match: str) -> None:
    assert any(isinstance(r, cause) and match in str(r) for r in results), results
    assert all(isinstance(r, cause | CONSEQUENCES) for r in results), results


async def reveal_shapes(party: mpcrt.Party):
    x = await party.input(torch.ones(3 if party.id == 0 else 4), src=party.id)
    return await x.reveal()


@pytest.mark.parametrize("kind", KINDS)
async def test_different_shapes(kind):
    results = await run_pair(reveal_shapes, kind=kind, timeout=3)
    assert all(isinstance(r, mpcrt.ProgramMismatch) for r in results), results
    assert "expects i8(3,)" in str(results[0]) and "sent i8(4,)" in str(results[0])


async def different_ops(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if party.id == 0:
        return await x.reveal()
    with mpcrt.op_label("something else"):
        return await x.reveal()


async def test_different_operations():
    assert_both_failed(await run_pair(different_ops, timeout=3), mpcrt.ProgramMismatch, "different programs")


async def fewer_steps(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    for _ in range(1 if party.id == 0 else 3):
        await x.reveal()


@pytest.mark.parametrize("kind", KINDS)
async def test_one_program_ends_early(kind):
    start = time.monotonic()
    results = await run_pair(fewer_steps, kind=kind, timeout=3)
    assert_both_failed(results, mpcrt.ProgramMismatch, "the programs differ")
    assert time.monotonic() - start < 2


async def raises(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if party.id == 1:
        raise ZeroDivisionError("the model diverged")
    return await x.reveal()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_party_raising_tells_the_other(kind):
    r0, r1 = await run_pair(raises, kind=kind, timeout=3)
    assert isinstance(r1, ZeroDivisionError)
    assert isinstance(r0, mpcrt.PeerAborted) and "party 1 failed: ZeroDivisionError: the model diverged" in str(r0)


async def stalls(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if party.id == 1:
        await asyncio.sleep(2.0)
    return await x.reveal()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_peer_times_out(kind):
    start = time.monotonic()
    r0, r1 = await run_pair(stalls, kind=kind, timeout=0.5)
    assert isinstance(r0, mpcrt.PeerTimeout) and "sent nothing for 0.5 s" in str(r0)
    assert isinstance(r1, mpcrt.PeerAborted | mpcrt.PeerLost)  # told when it wakes up
    assert time.monotonic() - start < 2.0 + 1.0


async def crashes(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if party.id == 1:
        await party.transport.close()  # the link drops without a word (process died)
        await asyncio.sleep(0.5)
        return None
    return await x.reveal()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_dropped_connection(kind):
    start = time.monotonic()
    r0, _ = await run_pair(crashes, kind=kind, timeout=3)
    assert isinstance(r0, mpcrt.PeerLost) and "lost its connection to party 1" in str(r0)
    assert time.monotonic() - start < 2


async def injects_garbage(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if party.id == 1:
        party.transport._peer.inject(b"\x05\x00\x00\x00garbage")  # party 0 receives a broken frame
    return await x.reveal()


async def test_a_malformed_frame():
    r0, r1 = await run_pair(injects_garbage, timeout=3)
    assert isinstance(r0, MalformedFrame) and "malformed frame" in str(r0)
    assert isinstance(r1, mpcrt.PeerAborted | mpcrt.ProgramMismatch | mpcrt.PeerLost)


async def nothing(party: mpcrt.Party):
    return party.id


@pytest.mark.parametrize(("options", "match"), [
    ([{"frac_bits": 16}, {"frac_bits": 20}], "frac_bits"),
    ([{"session": "job-a"}, {"session": "job-b"}], "session id"),
    # what "auto" chooses methods by: parties disagreeing would run different protocols
    ([{"network": PRESETS["wan"]}, {}], "declared network"),
    ([{"prefetched": True}, {}], "offline phase"),
    ([{"comparison": "tree"}, {"comparison": "dcf"}], "comparison method"),
    ([{"truncation": "dealer"}, {"truncation": "local"}], "truncation mode"),
])
async def test_handshake_disagreements(options, match):
    results = await run_pair(nothing, timeout=3, party_options=options)
    assert all(isinstance(r, mpcrt.HandshakeError | mpcrt.PeerAborted) for r in results), results
    assert any(isinstance(r, mpcrt.HandshakeError) and match in str(r) for r in results)


async def test_two_parties_claiming_the_same_id():
    from tests.conftest import make_link

    a, b = await make_link("memory")
    results = await asyncio.gather(mpcrt.Party(0, a, timeout=2).run(nothing), mpcrt.Party(0, b, timeout=2).run(nothing),
                                   return_exceptions=True)
    assert all(isinstance(r, mpcrt.HandshakeError | mpcrt.PeerAborted) for r in results), results
    assert any("party id" in str(r) for r in results)


async def test_a_peer_that_never_starts():
    from tests.conftest import make_link

    a, _ = await make_link("memory")
    start = time.monotonic()
    with pytest.raises(mpcrt.PeerTimeout, match="its handshake"):
        await mpcrt.Party(0, a, timeout=0.3).run(nothing)
    assert time.monotonic() - start < 1.5


async def ok(party: mpcrt.Party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    return await x.reveal()


async def test_failures_leave_the_process_usable():
    for program in (reveal_shapes, raises, fewer_steps):
        await run_pair(program, kind="tcp+tls", timeout=2)
        r0, r1 = await run_pair(ok, kind="tcp+tls")
        assert torch.equal(r0, torch.ones(2)) and torch.equal(r1, torch.ones(2))
