"""TCP/TLS specifics: peers that die mid-frame or speak garbage, certificates, connecting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from mpcrt.local import local_credentials, tls_config
from transports import (
    AuthenticationError,
    ConnectionClosed,
    FrameError,
    TLSConfig,
    TransportTimeout,
    connect,
    generate_certificates,
    listen,
)
from transports.framing import frame_header
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
