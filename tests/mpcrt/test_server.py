"""Edge servers serving owner-started jobs over mutual TLS: one job at a time, each isolated."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re

import msgpack
import pytest
import torch

from mpcrt import ops
from mpcrt.owner_jobs import ServerUnreachable, start_job
from mpcrt.owner_link import OwnerLink, OwnerLost
from mpcrt.server import EdgeServer, JobRefused, ServerConfig, hello, parse_address
from transports import TLSConfig, connect, generate_certificates, load_credentials, pair

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


async def links(party, args):
    """What the job declares to each server, and how long party 1 waited for material."""
    x = await party.owner.receive("x")
    party.owner.send("y", await ops.mul(x, x))
    seen = torch.tensor([party.network.rtt_s * 1e3, party.owner_network.bandwidth_bps / 1e6,
                         party.stats.offline.seconds])
    party.owner.send("seen", await party.input(seen if party.id == 1 else None, src=1))  # party 1's figures


async def test_the_owners_link_is_declared_to_both_servers_and_simulated(certs, tmp_path):
    slow = {"bandwidth_mbps": 2, "rtt_ms": 200}
    async with two_servers(certs, tmp_path, {"links": links}) as (addresses, _):
        job = await start_job(addresses, certs, "links", {}, SEEDS, network="lan", owner_network=slow)
        try:
            job.client.share({"x": torch.tensor([1.5, -2.0])})
            assert torch.allclose(await job.client.reveal("y"), torch.tensor([2.25, 4.0]), atol=1e-3)
            rtt, bandwidth, waited = (await job.client.reveal("seen")).tolist()
        finally:
            await job.close()
    assert abs(rtt - 0.25) < 1e-3 and abs(bandwidth - 2) < 1e-3  # ms, Mbit/s
    assert waited >= 0.2  # party 1's material crossed the simulated owner link: a round trip at least


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
    from mpcrt.owner_link import INPUT, ServerFailed

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
    from mpcrt.owner_jobs import DEALER_REFUSED
    from mpcrt.owner_link import ServerFailed

    async with two_servers(certs, tmp_path) as (addresses, logs):
        # square's one product needs a triple of 3 x 8 bytes for its corrected party: allow less
        job = await start_job(addresses, certs, "square", {}, SEEDS, dealer_limits=DealerLimits(job_bytes=16))
        job.client.share({"x": torch.tensor([3.0])})
        with pytest.raises(ServerFailed) as raised:
            await job.client.reveal("y", timeout=10)
        cause = await job.client.settle(timeout=5)
        await job.close()
        assert job.dealer.refusals
        asker = job.dealer.refusals[0].party_id  # the server that asked for the triple's correction
        for failure in (raised.value, cause):
            assert failure.party_id == asker and failure.kind == DEALER_REFUSED, failure
            assert f"server {asker} (127.0.0.1:" in str(failure) and "16" in str(failure)
        assert any(f"server {asker}: job 'job' failed" in line for line in logs), "\n".join(logs)
        # the servers serve the next job, whose dealer has room for it
        y = await run_square(addresses, certs, torch.tensor([3.0]), dealer_limits=DealerLimits(job_bytes=1 << 20))
        assert abs(float(y) - 9.0) < 1e-3


# --- a server that no owner can wedge (issue 18, items 2 and 8): its job protocol on in-process links

HOSTILE_TIMEOUT = 600.0  # a hostile job's own timeout: ending only at it would fail the waits below
PROMPTLY = 30.0  # what "at once" may take on a loaded machine; far below HOSTILE_TIMEOUT


async def values_of_a_job(certs, tmp_path, programs=None, party=0, peer=("127.0.0.1", 1)):
    logs: list[str] = []
    server = EdgeServer(ServerConfig(party, ("127.0.0.1", 0), peer, certs, tmp_path / f"s{party}"),
                        programs or {"square": square}, log=logs.append)
    return server, logs


def dealer_frame():
    return msgpack.packb({"channel": "dealer", "session": "0123456789abcdef" * 2})


def control_frame(party=0, **changes):
    spec = {"channel": "control", "session": "0123456789abcdef" * 2, "program": "square", "party": party,
            "seed": SEEDS[party], "args": {}, "name": "hostile", "timeout": HOSTILE_TIMEOUT}
    return msgpack.packb({**spec, **changes})


async def open_channel(server, frame):
    """An in-process connection to `server` that sends `frame` first; (the owner's end, the
    server's task handling it)."""
    owner, end = pair()
    owner.send(frame)
    return owner, asyncio.ensure_future(server._route(end))


def no_traceback(logs):
    assert not any("Traceback" in line for line in logs), "\n".join(logs)


async def test_an_owner_that_leaves_before_the_answer_leaves_the_server_free(certs, tmp_path):
    server, logs = await values_of_a_job(certs, tmp_path)
    owner, task = await open_channel(server, control_frame())
    await owner.close()  # gone before the server answers: the answer cannot be sent
    await asyncio.wait_for(task, PROMPTLY)  # raised ConnectionClosed and left the job set, before
    assert server.job is None
    assert any("job 'hostile' (session 01234567) did not start: the owner left before this server's answer" in line
               for line in logs), "\n".join(logs)
    # the next job is taken (not refused as busy)
    owner, task = await open_channel(server, control_frame())
    assert msgpack.unpackb(await owner.recv(PROMPTLY)) == {"ok": True, "party": 0}
    await owner.close()
    await asyncio.wait_for(task, PROMPTLY)
    assert server.job is None and server.jobs_done == 1
    no_traceback(logs)


@pytest.mark.parametrize("party", [0, 1])
@pytest.mark.parametrize("step", ["after the answer", "after the dealer channel"])
async def test_an_owner_that_vanishes_during_the_start_ends_the_job_at_once(certs, tmp_path, party, step):
    """Party 0 then waits for the peer, party 1 dials it (nothing listens there): both notice
    the owner leaving, not only at the job's timeout."""
    server, logs = await values_of_a_job(certs, tmp_path, party=party)
    owner, task = await open_channel(server, control_frame(party))
    assert msgpack.unpackb(await owner.recv(PROMPTLY)) == {"ok": True, "party": party}
    dealer = None
    if step == "after the dealer channel":
        dealer, attached = await open_channel(server, dealer_frame())
        assert msgpack.unpackb(await dealer.recv(PROMPTLY)) == {"ok": True}
        await asyncio.wait_for(attached, PROMPTLY)
    await owner.close()
    if dealer is not None:
        await dealer.close()
    await asyncio.wait_for(task, PROMPTLY)
    assert server.job is None
    assert any("job 'hostile' failed: the owner is gone or silent" in line for line in logs), "\n".join(logs)
    no_traceback(logs)


BAD_VALUES = [
    ({"timeout": 0}, "timeout must be a number of seconds above 0"),
    ({"timeout": -1}, "timeout must be"),
    ({"timeout": float("nan")}, "timeout must be"),
    ({"timeout": float("inf")}, "timeout must be"),
    ({"timeout": "120"}, "timeout must be"),
    ({"timeout": True}, "timeout must be"),
    ({"timeout": 1e9}, "at most 86400"),
    ({"frac_bits": 99}, "frac_bits must be an integer in"),
    ({"frac_bits": "16"}, "frac_bits must be an integer, got '16'"),
    ({"truncation": "fast"}, "truncation must be one of dealer, local"),
    ({"comparison": ["tree"]}, "comparison must be one of auto"),
    ({"network": "moon"}, "unknown network preset 'moon'"),
    ({"network": {"bandwidth_mbps": "x", "rtt_ms": 1}}, r"its network"),
    ({"network": 5}, "network must be None"),
    ({"owner_network": "moon"}, "its owner_network: unknown network preset 'moon'"),
    ({"owner_network": {"rtt_ms": 1}}, r"its owner_network: custom network needs bandwidth_mbps"),
    ({"program": ["square"]}, r"no program \['square'\] here"),
    ({"program": {"a": 1}}, "no program"),
    ({"party": True}, "lists it as party True"),
    ({"session": 5}, "the session id 5 is not"),
    ({"session": "../../x"}, "the session id"),
    ({"name": 5}, "the job's name 5"),
    ({"name": "x" * 500}, "the job's name"),
    ({"seed": "a" * 16}, "the dealer seed is not"),
    ({"seed": b"a"}, "the dealer seed is not"),
    ({"args": [1, 2]}, "arguments are a list"),
    ({"args": None}, "arguments are a NoneType, not a map"),
]


@pytest.mark.parametrize(("changes", "says"), BAD_VALUES, ids=[repr(c)[:40] for c, _ in BAD_VALUES])
async def test_every_value_of_a_job_description_is_checked_before_the_job_is_taken(certs, tmp_path, changes, says):
    server, logs = await values_of_a_job(certs, tmp_path)
    owner, task = await open_channel(server, control_frame(**changes))
    answer = msgpack.unpackb(await owner.recv(PROMPTLY), strict_map_key=False)
    await asyncio.wait_for(task, PROMPTLY)  # several raised out of the connection's task, before
    assert set(answer) == {"error"}, answer
    assert answer["error"].startswith("server 0 refuses the job: ") or "lists it as party" in answer["error"]
    assert re.search(says, answer["error"]), answer["error"]
    assert server.job is None and server.jobs_done == 0
    assert len(logs) == 1 and logs[0].endswith(f"server 0: {answer['error']}")  # one line, the owner's answer
    await owner.close()


async def test_the_first_frame_of_a_connection_cannot_break_its_handling(certs, tmp_path):
    server, logs = await values_of_a_job(certs, tmp_path)
    frames = [b"\xc1", msgpack.packb([1, 2]), msgpack.packb("control"), msgpack.packb({"channel": "control"}),
              msgpack.packb({"channel": ["x"], "session": 1}), msgpack.packb({"channel": "dealer", "session": [1]}),
              msgpack.packb({"channel": "peer", "session": {"a": 1}}), msgpack.packb([[[[[[[[[]]]]]]]]])]
    for frame in frames:
        owner, task = await open_channel(server, frame)
        await asyncio.wait_for(task, PROMPTLY)
        await owner.close()
    assert len(logs) == len(frames) and server.job is None, "\n".join(logs)
    no_traceback(logs)


async def test_a_dealer_connection_that_left_before_its_answer_is_not_attached(certs, tmp_path):
    server, logs = await values_of_a_job(certs, tmp_path)
    owner, task = await open_channel(server, control_frame())
    assert msgpack.unpackb(await owner.recv(PROMPTLY))["ok"]
    dealer, attached = await open_channel(server, dealer_frame())
    await dealer.close()
    await asyncio.wait_for(attached, PROMPTLY)  # raised ConnectionClosed out of the connection's task, before
    assert not server.job.dealer.done()  # the job waits for another dealer connection
    await owner.close()
    await asyncio.wait_for(task, PROMPTLY)
    assert server.job is None
    assert any("its dealer connection from a client at ? closed before it was answered" in line for line in logs), logs
    no_traceback(logs)


async def job_values_refused(party, args):
    from mpcrt.server import JobValueError

    raise JobValueError("batches must be at least 1, got 0")


async def test_ordinary_failures_log_one_line_and_bugs_their_traceback(certs, tmp_path):
    programs = {"square": square, "crash": crash, "refuse": job_values_refused}
    async with two_servers(certs, tmp_path, programs) as (addresses, logs):
        for program in ("refuse", "crash"):
            job = await start_job(addresses, certs, program, {}, SEEDS)
            with pytest.raises(Exception, match=r"batches must be|failed on purpose"):
                await job.client.reveal("anything", timeout=10)
            await job.client.settle(timeout=5)
            await job.close()
        for _ in range(200):  # both servers' lines about the crash (the peer's echo comes on its own time)
            if sum("job 'job' failed" in line for line in logs) >= 4:
                break
            await asyncio.sleep(0.05)
        # each program fails at both servers, unless one hears of its peer's failure first (PeerAborted)
        refused = [line for line in logs if "the owner's job values are refused" in line]
        assert refused and all("batches must be at least 1, got 0; the owner must change them" in line
                               and "\n" not in line for line in refused), "\n".join(logs)
        bugs = [line for line in logs if "an unexpected RuntimeError" in line]
        assert bugs and all("Traceback" in line and "failed on purpose" in line for line in bugs), "\n".join(logs)
        assert sum("Traceback" in line for line in logs) == len(bugs), "\n".join(logs)
        assert abs(float(await run_square(addresses, certs, torch.tensor([1.0]))) - 1.0) < 1e-3


@pytest.mark.parametrize(("key", "value"), [("connect_timeout", 0), ("connect_timeout", -1.0), ("timeout", 0),
                                            ("timeout", float("nan")), ("timeout", 1e9), ("connect_timeout", "30")])
async def test_the_owner_checks_its_timeouts_before_it_connects(certs, key, value):
    # connect_timeout = 0 made the owner leave before each server's answer (which wedged the server, before)
    with pytest.raises(ValueError, match=f"{key} must be a number of seconds above 0"):
        await start_job((("127.0.0.1", 1), ("127.0.0.1", 2)), certs, "square", {}, SEEDS, **{key: value})


async def test_a_wait_given_up_leaves_no_stray_error_or_connection(certs, tmp_path):
    """The owner left while party 1 dialled the peer: the peer's refusal (or its connection)
    may arrive as the wait is given up; it logged "Task exception was never retrieved" with a
    traceback (or stayed open), before."""
    server, _ = await values_of_a_job(certs, tmp_path)
    loop = asyncio.get_running_loop()
    unhandled: list[dict] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    owner, end = pair()
    link = OwnerLink(end, 0, SEEDS[0], HOSTILE_TIMEOUT)
    await owner.close()  # the owner is gone
    made, _ = pair()

    async def arriving_as_given_up(result):
        try:
            await asyncio.sleep(HOSTILE_TIMEOUT)
        except asyncio.CancelledError:
            if isinstance(result, BaseException):
                raise result from None
            return result

    try:
        for result in (JobRefused("server 0 runs no job"), made):
            with pytest.raises(OwnerLost):
                await asyncio.wait_for(server._attach(link, arriving_as_given_up(result), HOSTILE_TIMEOUT, "the peer"),
                                       PROMPTLY)
        await link.close()
        del link, result, owner, end  # its failure's traceback holds the waits: they go now
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        assert not unhandled, unhandled
        assert made.closed
    finally:
        loop.set_exception_handler(None)
