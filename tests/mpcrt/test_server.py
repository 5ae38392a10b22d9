"""Edge servers serving owner-started jobs over mutual TLS: one job at a time, each isolated."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import pytest
import torch

from mpcrt import ops
from mpcrt.jobs import ServerUnreachable, start_job
from mpcrt.server import EdgeServer, JobRefused, ServerConfig, hello, parse_address
from transports import TLSConfig, connect, generate_certificates, load_credentials

SEEDS = (b"a" * 16, b"b" * 16)


async def square(party, args):
    x = await party.owner.receive("x")
    await asyncio.sleep(args.get("pause", 0))
    party.owner.send("y", await ops.mul(x, x))


async def crash(party, args):
    raise RuntimeError("the program failed on purpose")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    generate_certificates(d)
    return d


@contextlib.asynccontextmanager
async def two_servers(certs, tmp_path, programs=None):
    programs = programs or {"square": square, "crash": crash}
    logs: list[str] = []
    s0 = EdgeServer(ServerConfig(0, ("127.0.0.1", 0), ("127.0.0.1", 1), certs, tmp_path / "s0"), programs,
                    log=logs.append)
    t0 = asyncio.ensure_future(s0.serve())
    while s0.port is None:
        await asyncio.sleep(0.01)
    s1 = EdgeServer(ServerConfig(1, ("127.0.0.1", 0), ("127.0.0.1", s0.port), certs, tmp_path / "s1"), programs,
                    log=logs.append)
    t1 = asyncio.ensure_future(s1.serve())
    while s1.port is None:
        await asyncio.sleep(0.01)
    try:
        yield (("127.0.0.1", s0.port), ("127.0.0.1", s1.port)), logs
    finally:
        t0.cancel()
        t1.cancel()
        await asyncio.gather(t0, t1, return_exceptions=True)


async def run_square(addresses, certs, x, **kw):
    job = await start_job(addresses, certs, "square", kw.pop("args", {}), SEEDS, **kw)
    try:
        job.client.share({"x": x})
        return await job.client.reveal("y")
    finally:
        await job.close()


async def test_jobs_run_one_after_another(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, logs):
        for value in (1.5, -2.0):
            y = await run_square(addresses, certs, torch.tensor([value]))
            assert abs(float(y) - value**2) < 1e-3
    assert sum("done" in line for line in logs) == 4


async def test_a_second_owner_is_refused_while_a_job_runs(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, _):
        first = await start_job(addresses, certs, "square", {"pause": 0.5}, SEEDS)
        with pytest.raises(ServerUnreachable, match="busy with job"):
            await start_job(addresses, certs, "square", {}, SEEDS)
        first.client.share({"x": torch.tensor([3.0])})
        assert abs(float(await first.client.reveal("y")) - 9.0) < 1e-3
        await first.close()


async def test_a_peer_from_another_job_is_refused(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, _):
        job = await start_job(addresses, certs, "square", {"pause": 0.5}, SEEDS)
        intruder = await connect(*addresses[0], tls=TLSConfig(load_credentials(certs, "party1"), "party0"))
        with pytest.raises(JobRefused, match=r"runs job .* refused"):
            await hello(intruder, {"channel": "peer", "session": "another-job"}, 5, "server 0")
        await intruder.close()
        job.client.share({"x": torch.tensor([2.0])})
        assert abs(float(await job.client.reveal("y")) - 4.0) < 1e-3
        await job.close()


async def test_wrong_roles_and_unknown_programs_are_refused(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, _):
        swapped = (addresses[1], addresses[0])
        with pytest.raises(ServerUnreachable, match=r"not the party expected here.*swapped"):
            await start_job(swapped, certs, "square", {}, SEEDS)
        with pytest.raises(ServerUnreachable, match="no program 'nosuch'"):
            await start_job(addresses, certs, "nosuch", {}, SEEDS)
        # the servers still serve
        assert abs(float(await run_square(addresses, certs, torch.tensor([2.0]))) - 4.0) < 1e-3


async def test_a_failing_program_is_reported_to_the_owner(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, _):
        job = await start_job(addresses, certs, "crash", {}, SEEDS)
        with pytest.raises(Exception, match="failed on purpose"):
            await job.client.reveal("anything", timeout=10)
        await job.close()
        assert abs(float(await run_square(addresses, certs, torch.tensor([1.0]))) - 1.0) < 1e-3


async def test_a_server_that_is_not_up_is_retried_then_named(certs):
    with pytest.raises(ServerUnreachable, match=r"server 0 \(127.0.0.1:1\).*lpgan serve --party 0"):
        await start_job((("127.0.0.1", 1), ("127.0.0.1", 2)), certs, "square", {}, SEEDS, connect_timeout=0.5)


async def test_an_owner_with_another_ca_is_refused(certs, tmp_path):
    other = tmp_path / "other"
    generate_certificates(other)
    async with two_servers(certs, tmp_path) as (addresses, _):
        with pytest.raises(ServerUnreachable, match=r"certificate|TLS|did not accept"):
            await start_job(addresses, other, "square", {}, SEEDS, connect_timeout=3)
        assert abs(float(await run_square(addresses, certs, torch.tensor([1.0]))) - 1.0) < 1e-3


async def test_a_connection_that_does_not_introduce_itself_is_dropped(certs, tmp_path):
    async with two_servers(certs, tmp_path) as (addresses, logs):
        conn = await connect(*addresses[0], tls=TLSConfig(load_credentials(certs, "owner"), "party0"))
        conn.send(b"\xc1 not msgpack")
        with pytest.raises(Exception):  # noqa: B017 - closed by the server, however it surfaces
            await conn.recv(5)
        await conn.close()
        assert any("did not introduce itself" in line for line in logs)
        assert abs(float(await run_square(addresses, certs, torch.tensor([1.0]))) - 1.0) < 1e-3


def test_addresses_are_parsed_with_a_clear_error():
    assert parse_address("10.0.0.2:7000") == ("10.0.0.2", 7000)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ("7000", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


def test_frames_are_msgpack_maps():
    assert msgpack.unpackb(msgpack.packb({"ok": True})) == {"ok": True}


async def test_a_hostile_owner_input_is_refused_cleanly_and_the_server_serves_on(certs, tmp_path):
    from mpcrt.messages import Message, encode
    from mpcrt.owner import INPUT, ServerFailed

    async with two_servers(certs, tmp_path) as (addresses, logs):
        job = await start_job(addresses, certs, "square", {}, SEEDS)
        bad = encode(INPUT, [Message((), "x", [torch.zeros(1, dtype=torch.int64)])], meta=[[16, 99, [1]]])
        job.client.links[0].send(bad)  # an index past the dtype table: an IndexError before
        with pytest.raises(ServerFailed):
            await job.client.reveal("y", timeout=10)
        cause = await job.client.settle(timeout=5)  # server 1's echo of its peer's failure may come first
        assert cause is not None and cause.party_id == 0 and cause.kind == "OwnerFrameRefused"
        assert "refuses the owner's input 'x': dtype index 99" in str(cause)
        await job.close()
        assert any("refuses the owner's input" in line for line in logs)
        for _ in range(100):  # server 1 ends at once too (its peer aborts, or has ended), not at its timeout
            if any("server 1: job 'job' failed" in line for line in logs):
                break
            await asyncio.sleep(0.05)
        assert any("server 1: job 'job' failed" in line for line in logs), "\n".join(logs)
        assert abs(float(await run_square(addresses, certs, torch.tensor([1.0]))) - 1.0) < 1e-3


async def test_a_request_beyond_the_dealer_limits_ends_the_job_naming_the_server(certs, tmp_path):
    from mpcrt.dealer import DealerLimits
    from mpcrt.jobs import DEALER_REFUSED
    from mpcrt.owner import ServerFailed

    async with two_servers(certs, tmp_path) as (addresses, logs):
        # square's one product needs a triple of 3 x 8 bytes for party 1: allow less
        job = await start_job(addresses, certs, "square", {}, SEEDS, dealer_limits=DealerLimits(job_bytes=16))
        job.client.share({"x": torch.tensor([3.0])})
        with pytest.raises(ServerFailed) as raised:
            await job.client.reveal("y", timeout=10)
        cause = await job.client.settle(timeout=5)
        await job.close()
        for failure in (raised.value, cause):
            assert failure.party_id == 1 and failure.kind == DEALER_REFUSED, failure
            assert "server 1 (127.0.0.1:" in str(failure) and "16" in str(failure)
        assert job.dealer.refusals and job.dealer.refusals[0].party_id == 1
        assert any("server 1: job 'job' failed" in line for line in logs), "\n".join(logs)
        # the servers serve the next job, whose dealer has room for it
        y = await run_square(addresses, certs, torch.tensor([3.0]), dealer_limits=DealerLimits(job_bytes=1 << 20))
        assert abs(float(y) - 9.0) < 1e-3
