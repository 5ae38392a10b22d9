"""The dealer service over mutual TLS: same material as in-process, batched, and failures
reach both parties."""

from __future__ import annotations

import asyncio

import pytest
import torch

import mpcrt
from mpcrt import ops, prg
from mpcrt.dealer import DealerService, LocalDealer, Pregenerated, RemoteDealer, Request
from mpcrt.dealer.kinds import BeaverTriple, TruncationPair
from mpcrt.dealer.material import corrected_party
from mpcrt.local import _connect_dealer, _dealer_tls
from mpcrt.runtime import PartySettings
from tests.conftest import run_pair
from transports import TransportError, listen

SEEDS = (prg.derive_key(b"s0"), prg.derive_key(b"s1"))
SETTINGS = PartySettings(timeout=5)


class Running:
    """A dealer service on a TLS listener, for the length of a test."""

    def __init__(self, service: DealerService, listener, task) -> None:
        self.service, self.listener, self.task = service, listener, task

    @property
    def port(self) -> int:
        return self.listener.port

    async def stop(self) -> None:
        self.task.cancel()
        await self.service.close()
        await self.listener.close()


@pytest.fixture
async def dealer():
    service = DealerService(*SEEDS)
    listener = await listen("127.0.0.1", 0, tls=_dealer_tls(True), timeout=5)
    running = Running(service, listener, asyncio.ensure_future(service.serve(listener)))
    yield running
    await running.stop()


async def test_service_gives_the_same_material_as_in_process_and_batches_a_tick(dealer):
    remote = await _connect_dealer(dealer.port, 1, True, SETTINGS)
    requests = [Request((i,), BeaverTriple("matmul", (3, 4), (4, 2))) for i in range(10)]
    requests.append(Request((99,), TruncationPair((5,), 16)))
    remote_answers = await asyncio.gather(*(remote.fetch(r, 1) for r in requests))
    local = LocalDealer(*SEEDS)
    for r, got in zip(requests, remote_answers, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, await local.fetch(r, 1), strict=True))
    assert remote.transport.counters.frames_sent == 1  # all eleven requests in one frame
    assert dealer.service.requests_served == 11
    await remote.close()


async def products(party):
    x = await party.input(torch.linspace(-3, 3, 12).reshape(3, 4) if party.id == 0 else None, src=0)
    y = await party.input(torch.linspace(1, 2, 8).reshape(4, 2) if party.id == 1 else None, src=1)
    z = await ops.matmul(x, y)
    return await z.reveal(), party.stats.offline.as_dict()


async def test_parties_with_the_service(dealer):
    remotes = [await _connect_dealer(dealer.port, i, True, SETTINGS) for i in (0, 1)]
    (z0, off0), (z1, off1) = await run_pair(products, source=remotes[1], source0=remotes[0], seeds=SEEDS,
                                            kind="tcp+tls")
    expected = torch.linspace(-3, 3, 12).reshape(3, 4).double() @ torch.linspace(1, 2, 8).reshape(4, 2).double()
    assert torch.equal(z0, z1) and float((z0 - expected).abs().max()) < 4 * 2 ** -16
    # each correction went to its request's corrected party: c of the 3x2 matmul (48 bytes), r_high and
    # r_msb (16 bits) of the 3x2 truncation (60 bytes)
    assert sorted([off0["bytes_received"], off1["bytes_received"]]) in ([0, 108], [48, 60])
    assert off0["requests"] == off1["requests"] == 2
    for remote in remotes:
        await remote.close()


async def test_a_dealer_that_dies_fails_both_parties(dealer):
    remotes = [await _connect_dealer(dealer.port, i, True, PartySettings(timeout=2)) for i in (0, 1)]
    await dealer.stop()  # closes the connections the parties would use
    results = await run_pair(products, source=remotes[1], source0=remotes[0], seeds=SEEDS, timeout=2)
    lost = [r for r in results if isinstance(r, mpcrt.DealerError)]
    assert lost and all("lost the connection to the dealer" in str(r) for r in lost)
    assert all(isinstance(r, mpcrt.DealerError | mpcrt.PeerAborted) for r in results)


class WrongShapes(LocalDealer):
    async def fetch(self, request, party_id):
        return [t[..., :1] for t in await super().fetch(request, party_id)]


async def test_material_of_the_wrong_shape_fails_both_parties():
    results = await run_pair(products, source=WrongShapes(*SEEDS), seeds=SEEDS, timeout=2)
    wrong = [r for r in results if isinstance(r, mpcrt.DealerError)]
    assert wrong and all("is it serving the same program" in str(r) for r in wrong)
    assert all(isinstance(r, mpcrt.DealerError | mpcrt.PeerAborted) for r in results)


async def test_pregenerated_material_that_lacks_a_request():
    results = await run_pair(products, source=Pregenerated({}), seeds=SEEDS, timeout=2)
    lacking = [r for r in results if isinstance(r, mpcrt.DealerError)]
    assert lacking and all("dry run" in str(r) for r in lacking)
    assert all(isinstance(r, mpcrt.DealerError | mpcrt.PeerAborted) for r in results)


def test_run_local_with_the_service_and_in_two_processes():
    for kwargs in ({"dealer": "service"}, {"dealer": "service", "transport": "tcp"}, {"processes": True}):
        (z0, _), (z1, _) = mpcrt.run_local(products, timeout=20, **kwargs)
        assert torch.equal(z0, z1)


def test_remote_dealer_is_a_correction_source():
    assert issubclass(RemoteDealer, mpcrt.dealer.CorrectionSource)


async def offline_then_online(party):
    x = await party.input(torch.linspace(-3, 3, 12).reshape(3, 4) if party.id == 0 else None, src=0)
    y = await party.input(torch.linspace(1, 2, 8).reshape(4, 2) if party.id == 1 else None, src=1)
    offline_before = party.stats.offline.as_dict()
    z = await ops.matmul(x, y)
    w = await ops.square(z)
    return await w.reveal(), offline_before, party.stats.offline.as_dict()


def test_offline_phase_prefetches_everything():
    from mpcrt.offline import record_plan
    from transports.loop import run

    plan = run(record_plan(offline_then_online))
    assert [r.kind for r in plan] == ["triple", "trunc", "masked_product", "trunc"]  # z is masked: squared unopened
    for kwargs in ({}, {"dealer": "service"}, {"processes": True}):
        (w0, before0, after0), (w1, before1, after1) = mpcrt.run_local(offline_then_online, offline=True,
                                                                        timeout=20, **kwargs)
        assert torch.equal(w0, w1)
        # everything was fetched before the program ran: the online phase asked for nothing
        for before, after in ((before0, after0), (before1, after1)):
            assert {**before, "ahead": 4} == after and after["on_demand"] == 0
        # the triple's c, then per truncation r_high and 16-bit r_msb, the square's N^2 and its 16-bit D N,
        # each to its request's corrected party
        assert before0["requests"] == before1["requests"] == 4
        assert before0["bytes_received"] + before1["bytes_received"] == 8 * 6 + 3 * (8 + 2) * 6


def test_a_partial_plan_is_prefetched_and_the_rest_fetched_on_demand():
    from mpcrt.offline import record_plan
    from transports.loop import run

    tail = run(record_plan(offline_then_online))[2:]  # the square and its truncation
    for kwargs in ({}, {"processes": True}):
        (w0, *_), (w1, before1, after1) = mpcrt.run_local(offline_then_online, plan=tail, timeout=20, **kwargs)
        assert torch.equal(w0, w1)
        assert before1["requests"] == 2 and after1["requests"] == 4  # the matmul's two fetched on demand
    with pytest.raises(ValueError, match="not both"):
        mpcrt.run_local(offline_then_online, offline=True, plan=tail)


async def test_a_party_cannot_ask_for_the_other_partys_material(dealer):
    import msgpack

    from mpcrt.messages import decode

    remote = await _connect_dealer(dealer.port, 0, True, SETTINGS)  # certified as party0
    request = Request((1,), BeaverTriple("mul", (2,), (2,)))
    remote.transport.send(msgpack.packb({"p": 1, "r": [request.to_wire()]}))  # claims to be party 1
    kind, messages, fields = decode(await remote.transport.recv(5))  # a refusal, no material
    assert (kind, messages) == ("error", []) and "party0 asked the dealer for party 1's material" in fields["message"]
    with pytest.raises(TransportError):  # then the service hangs up
        await remote.transport.recv(5)
    assert [r.party_id for r in dealer.service.refusals] == [0]


async def test_large_plans_travel_in_several_frames(monkeypatch, dealer):
    from mpcrt.dealer import service as service_module

    monkeypatch.setattr(service_module, "ANSWER_FRAME_BYTES", 600)  # 20 truncations of 50 elements: 10 kB
    remote = await _connect_dealer(dealer.port, 1, True, SETTINGS)
    every = (Request((i,), TruncationPair((50,), 16)) for i in range(1000))
    requests = [r for r in every if corrected_party(r) == 1][:20]  # each with 500 bytes for party 1
    answers = await remote.fetch_many(requests, 1)
    local = LocalDealer(*SEEDS)
    for r, got in zip(requests, answers, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, await local.fetch(r, 1), strict=True))
    assert remote.transport.counters.frames_sent == 20  # 500 bytes each (r_high, 16-bit r_msb): one per frame
    await remote.close()


async def test_material_too_large_for_any_frame_says_what_to_do(dealer):
    remote = await _connect_dealer(dealer.port, 1, True, SETTINGS)
    remote.transport.max_frame_bytes = 1000
    with pytest.raises(mpcrt.DealerError, match="split the operation into smaller batches"):
        await remote.fetch(Request((3,), TruncationPair((500,), 16)), 1)  # party 1 is its corrected party
    await remote.close()
