"""Hostile clients against a real `lpgan serve` pair (issue 18): the job protocol must survive them.

Two `lpgan serve` processes serve the whole module. Each case does what a hostile or broken
client does (garbage, a byte at a time, oversized and truncated frames, a control frame then
close, an owner that vanishes at each step of a job's start), then a real job (secure
synthesis of one image, the owner in this process) must run on the same servers. A job the
hostile owner started has a timeout of HOSTILE_TIMEOUT: it must end at once, well before it.
No case may leave a traceback in a server's log (ordinary events log one line, issue 18 item 8).
Connection floods and file-descriptor limits are the transports' suite (tests/transports).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import torch

from gan import models
from gan.demo import start_servers
from gan.owner_jobs import drive_synthesis
from mpcrt.owner_jobs import start_job
from transports import generate_certificates, load_credentials
from transports.framing import frame_header
from transports.loop import run
from transports.tcp import GREETING

HOSTILE_TIMEOUT = 600  # the hostile jobs' own timeout: a job that ends only at it fails the waits below
PROMPTLY = 60.0  # what "at once" may take on a loaded machine, far below HOSTILE_TIMEOUT
PRESET = models.PRESETS["small"]
# a server's line for a connection it closed before any job (the transport may find the fault first)
DROPPED = "dropped a connection from owner at .* that did not introduce itself|refused a connection: "


class Servers:
    """The module's two `lpgan serve` processes and their logs."""

    def __init__(self, folder: Path) -> None:
        self.certs = folder / "certs"
        generate_certificates(self.certs)
        self.logs = (folder / "serve0.log", folder / "serve1.log")
        self.procs, self.ports = start_servers(self.certs, folder / "state", self.logs)
        self.addresses = (("127.0.0.1", self.ports[0]), ("127.0.0.1", self.ports[1]))

    def log(self, i: int, since: int = 0) -> str:
        return self.logs[i].read_text()[since:]

    def marks(self) -> tuple[int, int]:
        return len(self.log(0)), len(self.log(1))

    def wait_log(self, i: int, pattern: str, since: int) -> str:
        """The first line of server i's log after `since` that matches `pattern` (waits up to PROMPTLY)."""
        deadline = time.monotonic() + PROMPTLY
        while True:
            found = re.search(f".*(?:{pattern}).*", self.log(i, since))
            if found:
                return found.group(0)
            assert all(p.poll() is None for p in self.procs), "a server exited:\n" + self.log(0) + self.log(1)
            assert time.monotonic() < deadline, f"server {i} did not log /{pattern}/ within {PROMPTLY:g} s:\n" \
                                                f"{self.log(i, since)}"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except Exception:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    running = Servers(tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


@pytest.fixture
def case(servers: Servers) -> Iterator[tuple[int, int]]:
    """Where the servers' logs stood before the case; after it, a real job must run and
    neither log may hold a traceback."""
    marks = servers.marks()
    yield marks
    real_job(servers)
    for i in (0, 1):
        assert "Traceback" not in servers.log(i, marks[i]), servers.log(i, marks[i])


def real_job(servers: Servers) -> None:
    """Secure synthesis of one image from a fresh small generator: both servers must take it,
    run it and report it done."""
    async def job() -> torch.Size:
        started = await start_job(servers.addresses, servers.certs, "synthesize", {"preset": "small", "batches": 1},
                                  (secrets.token_bytes(16), secrets.token_bytes(16)), name="real",
                                  timeout=PROMPTLY, connect_timeout=PROMPTLY)
        try:
            images = await drive_synthesis(started.client, models.generator(PRESET), torch.randn(1, PRESET.nz, 1, 1), 1)
            deadline = time.monotonic() + PROMPTLY
            while not all(started.client.finished) and started.client.failure is None:
                assert time.monotonic() < deadline, "the servers did not report the job done"
                await asyncio.sleep(0.01)
            return images.shape
        finally:
            await started.close()

    assert run(job()) == (1, PRESET.channels, PRESET.image_size, PRESET.image_size)


# --- a hostile client's means: raw TCP, TLS with the owner's certificate, frames by hand

def tcp(servers: Servers, i: int) -> socket.socket:
    sock = socket.create_connection(servers.addresses[i], timeout=PROMPTLY)
    sock.settimeout(PROMPTLY)
    return sock


def tls(servers: Servers, i: int, name: str = "owner") -> ssl.SSLSocket:
    """A TLS connection to server i with `name`'s certificate (the owner's: any holder of it),
    once the server greeted it (transports.tcp: it has been accepted)."""
    creds = load_credentials(servers.certs, name)
    ctx = ssl.create_default_context(cafile=str(creds.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(creds.cert_file), str(creds.key_file))
    sock = ctx.wrap_socket(tcp(servers, i), server_hostname=f"party{i}")
    assert read_frame(sock, raw=True) == GREETING
    return sock


def frame(fields: object) -> bytes:
    body = msgpack.packb(fields)
    return frame_header(len(body)) + body


def read_frame(sock: socket.socket, raw: bool = False) -> object:
    header = read_exactly(sock, 12)
    (length,) = struct.unpack("<Q", header[4:])
    body = read_exactly(sock, length)
    return body if raw else msgpack.unpackb(body)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """The server closes the connection (within PROMPTLY): nothing more comes but its end."""
    try:
        while sock.recv(4096):
            pass
    except (ConnectionError, ssl.SSLError, OSError) as exc:
        return not isinstance(exc, TimeoutError)
    return True


def vanish(sock: socket.socket) -> None:
    """Leave as a killed process or a lost network does: no TLS goodbye, a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def control(i: int, session: str, name: str) -> dict:
    return {"channel": "control", "session": session, "program": "synthesize", "party": i,
            "seed": secrets.token_bytes(16), "args": {"preset": "small", "batches": 1}, "name": name,
            "timeout": HOSTILE_TIMEOUT}


def ended(name: str) -> str:
    """A server's line for a hostile job that ended (whichever way)."""
    return f"job '{name}' (?:\\(session [0-9a-f]+\\) did not start|failed)"


class Trickle(threading.Thread):
    """Sends `data` a byte at a time (one TCP segment, or one TLS record, each) until stopped."""

    def __init__(self, sock: socket.socket, data: bytes, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.every = sock, data, every
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while self.sent < len(self.data) and not self.halt.wait(self.every):
                self.sock.send(self.data[self.sent:self.sent + 1])
                self.sent += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(PROMPTLY)
        self.sock.close()


# --- the cases


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 4, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                     b"\x16\x03\x01\x40\x00"])  # the last: a TLS record that never comes
def test_garbage_instead_of_tls(servers, case, garbage):
    with tcp(servers, 0) as sock:
        sock.sendall(garbage)
        real_job(servers)  # while the garbage's connection is open
    servers.wait_log(0, "refused a connection: ", case[0])


@pytest.mark.parametrize("garbage", [b"not a frame at all" * 10, frame_header(5) + b"\xc1\xc1\xc1\xc1\xc1",
                                     frame([1, 2, 3]), frame({"channel": "nonsense", "session": 1})])
def test_garbage_inside_tls(servers, case, garbage):
    with tls(servers, 0) as sock:
        sock.sendall(garbage)
        assert closed_by_server(sock)
    servers.wait_log(0, DROPPED, case[0])


def test_slow_clients_do_not_hold_a_job_up(servers, case):
    """A byte at a time: a TLS handshake, and inside TLS a frame announcing more than it will
    send; a real job runs while both are under way."""
    slow = [Trickle(tcp(servers, 0), client_hello(servers, 0)),
            Trickle(tls(servers, 1), frame_header(1000) + b"x" * 1000)]
    try:
        for t in slow:
            t.start()
        deadline = time.monotonic() + PROMPTLY
        while not all(t.sent >= 3 for t in slow):
            assert time.monotonic() < deadline and all(t.is_alive() for t in slow), [t.sent for t in slow]
            time.sleep(0.01)
        real_job(servers)
    finally:
        for t in slow:
            t.stop()


def client_hello(servers: Servers, i: int) -> bytes:
    """The first bytes a TLS client with the owner's certificate sends to server i."""
    creds = load_credentials(servers.certs, "owner")
    ctx = ssl.create_default_context(cafile=str(creds.ca_file))
    ctx.load_cert_chain(str(creds.cert_file), str(creds.key_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_object = ctx.wrap_bio(incoming, outgoing, server_hostname=f"party{i}")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_object.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]  # a handshake record
    return hello


@pytest.mark.parametrize("length", [1 << 40, (1 << 64) - 1])
def test_an_oversized_frame_is_refused(servers, case, length):
    with tls(servers, 0) as sock:
        sock.sendall(frame_header(length) + b"x" * 100)
        assert closed_by_server(sock)


@pytest.mark.parametrize("sent", [frame_header(100)[:6], frame_header(100) + b"x" * 10,
                                  frame(control(0, "a" * 32, "truncated"))[:40]])
def test_a_truncated_frame_then_close(servers, case, sent):
    with tls(servers, 0) as sock:
        sock.sendall(sent)
    servers.wait_log(0, DROPPED, case[0])


def test_a_control_frame_then_close_leaves_the_server_free(servers, case):
    """Issue 18 item 2: the server set the job before answering; an owner gone by then left it
    busy for good. Whether the owner is gone before or after the answer is the network's call:
    each round must end the job either way."""
    for k in range(3):
        marks = servers.marks()
        for i in (0, 1):
            with tls(servers, i) as sock:
                sock.sendall(frame(control(i, secrets.token_hex(16), f"hostile-{k}")))
        for i in (0, 1):
            servers.wait_log(i, ended(f"hostile-{k}"), marks[i])


# where the hostile owner stops: (the servers it sent a control frame, those it opened a dealer channel to)
STEPS = {
    "after the TLS handshake": ((), ()),
    "after the control frame": ((0,), ()),  # before the answer, as item 2's owner
    "after the answer": ((0,), ()),  # server 0 waits for the dealer channel
    "after the dealer channel": ((0,), (0,)),  # server 0 waits for the peer
    "after both answers and server 1's dealer": ((0, 1), (1,)),  # server 1 dials server 0, which waits for its dealer
    "after the servers connected to each other": ((0, 1), (0, 1)),  # both wait for the owner's first input
}


@pytest.mark.parametrize("step", list(STEPS))
def test_an_owner_that_vanishes_during_the_start_frees_the_servers(servers, case, step):
    session, name = secrets.token_hex(16), f"vanish-{list(STEPS).index(step)}"
    controls, dealers = STEPS[step]
    held: list[ssl.SSLSocket] = []
    try:
        if step == "after the TLS handshake":
            held.append(tls(servers, 0))
        for i in controls:
            held.append(tls(servers, i))
            held[-1].sendall(frame(control(i, session, name)))
            if step != "after the control frame":
                assert read_frame(held[-1]) == {"ok": True, "party": i}
        for i in dealers:
            held.append(tls(servers, i))
            held[-1].sendall(frame({"channel": "dealer", "session": session}))
            assert read_frame(held[-1]) == {"ok": True}
        if step == "after the servers connected to each other":
            for i in (0, 1):
                servers.wait_log(i, f"job '{name}'.*started(?s:.*)connected to the peer", case[i])
    finally:
        for sock in held:
            vanish(sock)
    if step == "after the TLS handshake":
        servers.wait_log(0, DROPPED, case[0])
    for i in sorted({*controls, *dealers}):
        servers.wait_log(i, ended(name), case[i])
