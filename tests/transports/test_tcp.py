"""TCP/TLS specifics: peers that die mid-frame or speak garbage, certificates, connecting, floods."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mpcrt.local import local_credentials, tls_config
from transports import (
    AuthenticationError,
    ConnectionClosed,
    FrameError,
    TLSConfig,
    TransportError,
    TransportTimeout,
    connect,
    generate_certificates,
    listen,
    load_credentials,
)
from transports.framing import frame_header
from transports.loop import LOOPS
from transports.loop import run as run_loop
from transports.tcp import GREETING, is_loopback


async def raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain socket that behaves like a peer up to the greeting, then does what the test says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(12 + len(GREETING))
    return reader, writer


async def plain_server():
    listener = await listen("127.0.0.1", 0, tls=None, timeout=5)
    return listener


async def test_peer_dying_mid_frame():
    listener = await plain_server()
    accepting = asyncio.ensure_future(listener.accept(5))
    _, writer = await raw_client(listener.port)
    server = await accepting
    writer.write(frame_header(1000) + b"only ten b")
    await writer.drain()
    writer.transport.abort()
    with pytest.raises(ConnectionClosed, match=r"middle of a frame \(22 of 1012 bytes\)"):
        await server.recv(5)
    await listener.close()


async def test_fragments_arriving_slowly_are_reassembled():
    listener = await plain_server()
    accepting = asyncio.ensure_future(listener.accept(5))
    _, writer = await raw_client(listener.port)
    server = await accepting
    stream = frame_header(5) + b"hello" + frame_header(3) + b"abc"
    for i in range(0, len(stream), 3):
        writer.write(stream[i:i + 3])
        await writer.drain()
        await asyncio.sleep(0.002)
    assert bytes(await server.recv(5)) == b"hello"
    assert bytes(await server.recv(5)) == b"abc"
    writer.close()
    await server.close()
    await listener.close()


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n\r\n", b"MPF1" + (1 << 40).to_bytes(8, "little")])
async def test_malformed_or_oversized_frame(garbage):
    listener = await plain_server()
    accepting = asyncio.ensure_future(listener.accept(5))
    reader, writer = await raw_client(listener.port)
    server = await accepting
    writer.write(garbage)
    await writer.drain()
    with pytest.raises(FrameError):
        await server.recv(5)
    with contextlib.suppress(ConnectionResetError):  # the server hung up: a reset or an orderly close
        assert await reader.read() == b""
    await listener.close()


async def both_sides(server_tls: TLSConfig, client_tls: TLSConfig | None):
    listener = await listen("127.0.0.1", 0, tls=server_tls, timeout=3)
    accepting = asyncio.ensure_future(listener.accept(5))
    start = time.monotonic()
    results = await asyncio.gather(connect("127.0.0.1", listener.port, tls=client_tls, timeout=3),
                                   accepting, return_exceptions=True)
    await listener.close()
    return results, time.monotonic() - start


async def test_certificate_from_another_ca_fails_on_both_sides(tmp_path):
    stranger = generate_certificates(tmp_path, ("party0", "party1"))
    (client, server), took = await both_sides(tls_config(1, True), TLSConfig(stranger["party0"], "party1"))
    assert isinstance(client, AuthenticationError) and "same CA" in str(client)
    assert isinstance(server, AuthenticationError)
    assert took < 3


async def test_client_rejects_a_server_from_another_ca(tmp_path):
    stranger = generate_certificates(tmp_path, ("party0", "party1"))
    (client, server), _ = await both_sides(TLSConfig(stranger["party1"], "party0"), tls_config(0, True))
    assert isinstance(client, AuthenticationError)
    assert isinstance(server, AuthenticationError)


async def test_peer_with_the_wrong_party_name_is_refused():
    creds = local_credentials()
    # the client presents party1's certificate where party0 is expected
    (client, server), _ = await both_sides(tls_config(1, True), TLSConfig(creds["party1"], "party1"))
    assert isinstance(server, AuthenticationError) and "expected 'party0'" in str(server)
    assert isinstance(client, ConnectionClosed | AuthenticationError)


async def test_plain_client_against_tls_server_fails_on_both_sides():
    (client, server), took = await both_sides(tls_config(1, True), None)
    assert isinstance(client, TransportTimeout) and "expect TLS" in str(client)
    assert isinstance(server, AuthenticationError)
    assert took < 4


async def test_tls_client_against_plain_server_fails():
    listener = await plain_server()
    with pytest.raises((AuthenticationError, ConnectionClosed, FrameError)):
        await connect("127.0.0.1", listener.port, tls=tls_config(0, True), timeout=2)
    await listener.close()


async def test_connect_retries_until_the_server_is_up():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def late_server():
        await asyncio.sleep(0.4)
        listener = await listen("127.0.0.1", port, tls=None)
        conn = await listener.accept(5)
        await listener.close()
        return conn

    server_task = asyncio.ensure_future(late_server())
    client = await connect("127.0.0.1", port, tls=None, timeout=5)
    server = await server_task
    client.send(b"hi")
    assert bytes(await server.recv(2)) == b"hi"
    await client.close()
    await server.close()


async def test_connect_gives_up_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionClosed, match="is the peer running"):
        await connect("127.0.0.1", port, tls=None, timeout=0.5)
    assert time.monotonic() - start < 2


async def test_port_in_use_is_a_clear_error():
    listener = await plain_server()
    with pytest.raises(ConnectionClosed, match=r"cannot listen.*another process"):
        await listen("127.0.0.1", listener.port, tls=None)
    await listener.close()


async def test_handshake_that_never_starts_times_out_on_the_server():
    listener = await listen("127.0.0.1", 0, tls=tls_config(1, True), timeout=0.3)
    _, writer = await asyncio.open_connection("127.0.0.1", listener.port)  # connects, says nothing
    with pytest.raises(AuthenticationError, match="did not finish the TLS handshake"):
        await listener.accept(5)
    assert listener.pending == 0  # its place is free again
    writer.close()
    await listener.close()


def test_certificate_files(tmp_path):
    creds = generate_certificates(tmp_path / "certs", ("party0", "owner"))
    assert set(creds) == {"party0", "owner"}
    assert (tmp_path / "certs" / "ca.pem").is_file()
    assert oct(creds["owner"].key_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("", False), ("::", False),
    ("10.0.0.2", False), ("192.168.1.7", False), ("example.org", False), ("localhost.example.org", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


async def test_plain_tcp_is_refused_off_loopback():
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"plain TCP \(tls=None\) is for loopback only, not '10.0.0.2'"):
        await connect("10.0.0.2", 7000, tls=None, timeout=5)  # refused before any attempt to connect
    for host in ("0.0.0.0", ""):
        with pytest.raises(ValueError, match="for loopback only"):
            await listen(host, 0, tls=None)
    assert time.monotonic() - start < 1


async def test_plain_tcp_on_localhost_and_tls_anywhere_still_work():
    listener = await listen("localhost", 0, tls=None, timeout=5)
    accepting = asyncio.ensure_future(listener.accept(5))
    client = await connect("localhost", listener.port, tls=None, timeout=5)
    server = await accepting
    client.send(b"hi")
    assert bytes(await server.recv(2)) == b"hi"
    for t in (client, server, listener):
        await t.close()
    for tls, remote in ((tls_config(1, True), False), (None, True)):
        await (await listen("0.0.0.0", 0, tls=tls, allow_plain_remote=remote)).close()


async def accept_skipping_errors(listener) -> tuple:
    """The next authenticated connection, and the failures reported before it."""
    errors = []
    while True:
        try:
            return await listener.accept(30), errors
        except TransportError as exc:
            errors.append(exc)


async def test_a_flood_of_silent_connections_does_not_keep_a_client_out():
    """Connections that never start their handshake are capped (max_pending): one more closes the
    oldest, so a client that authenticates gets in while the flood is still held open."""
    listener = await listen("127.0.0.1", 0, tls=tls_config(1, True), timeout=60, max_pending=8)
    flood = [(await asyncio.open_connection("127.0.0.1", listener.port))[1] for _ in range(30)]
    accepting = asyncio.ensure_future(accept_skipping_errors(listener))
    client = await connect("127.0.0.1", listener.port, tls=tls_config(0, True), timeout=30)
    server, errors = await accepting
    client.send(b"through")
    assert bytes(await server.recv(10)) == b"through"
    assert (listener.evicted, listener.pending) == (30 + 1 - 8, 7)  # the client was the 31st
    if not errors:  # the flood is reported once (then counted), whenever its first eviction ends
        with pytest.raises(ConnectionClosed) as reported:
            await listener.accept(10)
        errors.append(reported.value)
    assert len(errors) == 1 and "max_pending=8" in str(errors[0]) and "Connection limits" in str(errors[0])
    for writer in flood:
        writer.close()
    for t in (client, server, listener):
        await t.close()


async def test_max_pending_must_leave_room_for_one():
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        await listen("127.0.0.1", 0, tls=None, max_pending=0)


async def test_a_connection_that_cannot_be_set_up_does_not_stop_the_listener(monkeypatch):
    import transports.tcp

    real = transports.tcp.TcpTransport
    failures = iter([RuntimeError("simulated failure in the protocol factory")])

    def flaky(*args, **kwargs):
        failure = next(failures, None) if kwargs["server_side"] else None
        if failure is not None:
            raise failure
        return real(*args, **kwargs)

    listener = await listen("127.0.0.1", 0, tls=tls_config(1, True), timeout=10)
    monkeypatch.setattr(transports.tcp, "TcpTransport", flaky)
    with pytest.raises(ConnectionClosed):
        await connect("127.0.0.1", listener.port, tls=tls_config(0, True), timeout=10)
    with pytest.raises(TransportError, match=r"could not set up the connection .*simulated failure.*still listening"):
        await listener.accept(10)
    accepting = asyncio.ensure_future(listener.accept(10))
    client = await connect("127.0.0.1", listener.port, tls=tls_config(0, True), timeout=10)
    server = await accepting
    client.send(b"after")
    assert bytes(await server.recv(10)) == b"after"
    assert listener.accept_failures == 1
    for t in (client, server, listener):
        await t.close()


# A listener in its own process, left a few file descriptors more than it uses when idle; it
# answers "ping" frames and prints what accept() reports.
FD_LIMITED_SERVER = r"""
import asyncio, os, resource, sys
from transports import TLSConfig, TransportError, listen, load_credentials
from transports.loop import run

async def main(certs, mode):
    tls = TLSConfig(load_credentials(certs, "party1"), "party0") if mode == "tls" else None
    listener = await listen("127.0.0.1", 0, tls=tls, timeout=60)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8,
                                                resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print("port", listener.port, flush=True)
    serving = set()

    async def serve(conn):
        try:
            while True:
                conn.send(b"echo " + bytes(await conn.recv()))
        except TransportError:
            pass
        finally:
            await conn.close()

    while True:
        try:
            conn = await listener.accept()
        except TransportError as exc:
            print("refused:", exc, flush=True)
            continue
        task = asyncio.ensure_future(serve(conn))
        serving.add(task)
        task.add_done_callback(serving.discard)

run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd")
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", ["tls", "plain"])
def test_a_listener_out_of_file_descriptors_keeps_accepting(tmp_path, loop, mode):
    """Running out of descriptors once stopped uvloop's listener for good (the port still open).
    Over TLS the flood is unauthenticated: the oldest is closed to make room, and a client gets in
    while the flood is held. Plain TCP has no handshake to wait for, so the server holds every
    flood connection: it reports the limit and accepts again once they are gone."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    generate_certificates(tmp_path, ("party0", "party1"))
    env = {**os.environ, "MPCRT_LOOP": loop, "PYTHONPATH": str(Path(__file__).parents[2])}
    server = subprocess.Popen([sys.executable, "-c", FD_LIMITED_SERVER, str(tmp_path), mode], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    flood: list[socket.socket] = []

    def wait_for(text: str) -> str:
        seen = []
        while True:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"the server never printed {text!r}; it printed: {''.join(seen)}")
            seen.append(line)
            if text in line:
                return line

    async def exchange(port: int) -> bytes:
        tls = TLSConfig(load_credentials(tmp_path, "party0"), "party1") if mode == "tls" else None
        client = await connect("127.0.0.1", port, tls=tls, timeout=60)
        client.send(b"ping")
        try:
            return bytes(await client.recv(60))
        finally:
            await client.close()

    try:
        port = int(wait_for("port").split()[1])
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        report = wait_for("file descriptors")
        assert "raise the limit" in report and "ulimit -n" in report and "Connection limits" in report
        if mode == "plain":
            for s in flood:
                s.close()
        assert run_loop(exchange(port)) == b"echo ping"
    finally:
        server.kill()
        server.wait()
        for s in flood:
            s.close()


async def test_a_connect_cancelled_before_the_greeting_leaves_no_socket_open():
    connected, ended = asyncio.Event(), asyncio.Event()

    async def silent(reader, writer):  # a server that accepts and never greets
        connected.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # returns at the client's close or reset
        ended.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dialing = asyncio.ensure_future(connect("127.0.0.1", port, tls=None, timeout=30))
        await asyncio.wait_for(connected.wait(), 10)
        dialing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialing
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()


def test_connect_retries_a_listener_that_is_not_up_or_dropped_us_and_nothing_else():
    import errno as errnos

    from transports.tcp import _worth_retrying

    for exc in (ConnectionRefusedError(), ConnectionResetError(), ConnectionAbortedError(), TimeoutError(),
                OSError(errnos.EHOSTUNREACH, "unreachable"), OSError(errnos.ECONNRESET, "reset")):
        assert _worth_retrying(exc), exc
    for exc in (PermissionError(), OSError(errnos.EADDRNOTAVAIL, "no address"), OSError(errnos.EINVAL, "bad")):
        assert not _worth_retrying(exc), exc
