"""Frames over TCP, with TLS 1.3 and mutual authentication unless plain TCP is asked for.

Frames are a 12-byte header and the payload. Plain TCP reads payloads straight into
their final bytearray (asyncio BufferedProtocol) and writes header + caller buffers
without joining them. TLS runs in our own protocol over an `ssl.SSLObject` and memory
BIOs, so decrypted bytes land directly in frame buffers too, and so handshake failures
reach our code on both sides (asyncio's server-side TLS only logs them). After the
handshake and the identity check the server sends one greeting frame: when `connect`
returns, the server has accepted us.

Plain TCP (`tls=None`) is for this machine only: it authenticates nobody (a dealer behind it
cannot tell party 0 from party 1) and encrypts nothing, so `connect` and `listen` refuse it
for any address but loopback (unless `allow_plain_remote=True` says so, for measurements
between private network namespaces).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import ssl

from transports.base import DEFAULT_MAX_FRAME_BYTES, Frame, InboxTransport, frame_parts
from transports.errors import AuthenticationError, ConnectionClosed, FrameError, TransportError, TransportTimeout
from transports.framing import FrameDecoder, frame_header
from transports.tls import TLSConfig, describe_ssl_error

GREETING = b"lpgan-transport-1 ready"
DEFAULT_CONNECT_TIMEOUT = 30.0
_TLS_WRITE_CHUNK = 1 << 18


class TcpTransport(InboxTransport):
    """One end of a framed TCP (or TLS) connection."""

    def __init__(self, tls: TLSConfig | None, *, server_side: bool,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes)
        self._protocol: _FrameProtocol = (_TlsFrameProtocol(self, tls, server_side) if tls is not None
                                          else _FrameProtocol(self))
        self.peer_name: str | None = None  # the peer's certified name, over TLS

    @property
    def peer_address(self) -> object:
        t = self._protocol.transport
        return t.get_extra_info("peername") if t is not None else None

    def send(self, frame: Frame) -> None:
        parts = frame_parts(frame)
        size = sum(len(p) for p in parts)
        self._check_sendable(size)
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("the connection is closed")
        self._protocol.write_parts([memoryview(frame_header(size)), *parts])
        self.counters.frames_sent += 1
        self.counters.bytes_sent += size

    async def drain(self) -> None:
        await self._protocol.writable.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()  # flushes queued writes first
        await self._protocol.wait_closed(timeout=5.0)


class _FrameProtocol(asyncio.BufferedProtocol):
    """Plain TCP: the kernel writes straight into the decoder's buffers."""

    def __init__(self, owner: TcpTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(owner.max_frame_bytes, owner._deliver)
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # link usable (after TLS, if any)
        self._closed: asyncio.Future[None] = loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._set_ready()

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def write_parts(self, parts: list[memoryview]) -> None:
        assert self.transport is not None
        self.transport.writelines(parts)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._advance(nbytes)

    def _advance(self, nbytes: int) -> bool:
        try:
            self.decoder.advance(nbytes)
        except FrameError as exc:
            self._abort(exc)
            return False
        return True

    def _abort(self, error: TransportError) -> None:
        self.owner._fail(error)
        self._fail_ready(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail_ready(self, error: TransportError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # only the listener awaits it; clients learn from recv()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        partial = self.decoder.partial
        if isinstance(exc, ssl.SSLError):
            error: TransportError = AuthenticationError(describe_ssl_error(exc))
        elif partial is not None:
            error = ConnectionClosed(f"the peer's connection ended in the middle of a frame "
                                     f"({partial[0]} of {partial[1]} bytes); the peer probably died")
        else:
            error = ConnectionClosed("the peer closed the connection" + (f" ({exc})" if exc else ""))
        self.owner._fail(error)
        self._fail_ready(self.owner._error or error)
        self.writable.set()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def wait_closed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


class _TlsFrameProtocol(_FrameProtocol, asyncio.Protocol):
    """TLS 1.3 over memory BIOs; decrypted bytes are read into the decoder's buffers."""

    def __init__(self, owner: TcpTransport, tls: TLSConfig, server_side: bool) -> None:
        super().__init__(owner)
        self.tls = tls
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = tls.context(server_side=server_side).wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=None if server_side else tls.peer_names[0])

    # asyncio picks the buffered read path when these exist; TLS needs data_received instead.
    get_buffer = None  # type: ignore[assignment]
    buffer_updated = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._handshake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.ready.done():
            self._handshake()
        if self.ready.done() and not self.ready.exception():
            self._read_plaintext()

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # deliver our alert so the peer learns why
            self._abort(AuthenticationError(describe_ssl_error(exc)))
            return
        self._flush()
        try:
            self.owner.peer_name = self.tls.check_peer(self._ssl.getpeercert())
        except AuthenticationError as exc:
            self._abort(exc)
            return
        self._set_ready()

    def _read_plaintext(self) -> None:
        while True:
            buf = self.decoder.get_buffer()
            try:
                n = self._ssl.read(len(buf), buf)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break  # close_notify; connection_lost follows
            except ssl.SSLError as exc:
                self._abort(AuthenticationError(describe_ssl_error(exc)) if "alert" in str(exc)
                            else ConnectionClosed(f"TLS error from the peer: {exc}"))
                return
            if n == 0 or not self._advance(n):
                break
        self._flush()  # TLS may have replies of its own (key updates)

    def write_parts(self, parts: list[memoryview]) -> None:
        """Encrypt a frame: small parts are joined first (one record, one send for a small
        frame); large parts go in 256 KiB pieces straight from the caller's memory."""
        small = bytearray()
        for part in parts:
            if len(small) + len(part) <= _TLS_WRITE_CHUNK:
                small += part
                continue
            if small:
                self._ssl.write(small)
                small.clear()
            for start in range(0, len(part), _TLS_WRITE_CHUNK):
                self._ssl.write(part[start:start + _TLS_WRITE_CHUNK])
                self._flush()
        if small:
            self._ssl.write(small)
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._outgoing.read())


def is_loopback(host: str) -> bool:
    """`host` names this machine only: 127.0.0.0/8, ::1 (or ::ffff:127.x) or 'localhost'."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _check_plain_tcp(host: str, tls: TLSConfig | None, allow_plain_remote: bool) -> None:
    """Refuse plain TCP off loopback: nothing would authenticate or encrypt the link."""
    if tls is None and not allow_plain_remote and not is_loopback(str(host)):
        raise ValueError(f"plain TCP (tls=None) is for loopback only, not {host!r}: it neither authenticates the "
                         "peer nor encrypts; pass a TLSConfig (or use 127.0.0.1 for a local test)")


def _worth_retrying(exc: OSError) -> bool:
    """The peer may simply not be up yet (refused, unreachable for now, slow)."""
    return isinstance(exc, ConnectionRefusedError | TimeoutError) or exc.errno in (
        errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN)


async def connect(host: str, port: int, *, tls: TLSConfig | None, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, allow_plain_remote: bool = False) -> TcpTransport:
    """Connect to a listening peer, retrying with backoff while it is not up yet.

    `tls=None` means plain TCP and must be asked for explicitly (loopback only, unless
    `allow_plain_remote`).
    """
    _check_plain_tcp(host, tls, allow_plain_remote)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    where = f"{host}:{port}"
    while True:
        conn = TcpTransport(tls, server_side=False, max_frame_bytes=max_frame_bytes)
        try:
            await asyncio.wait_for(loop.create_connection(lambda c=conn: c._protocol, host, port),
                                   max(deadline - loop.time(), 0.1))
            break
        except OSError as exc:
            if not _worth_retrying(exc) or loop.time() + delay >= deadline:
                raise ConnectionClosed(
                    f"could not connect to {where} within {timeout:g} s ({exc}); "
                    "is the peer running and is the port open in its firewall?") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        greeting = await conn.recv(max(deadline - loop.time(), 1.0))
    except TransportError as exc:
        await conn.close()
        hint = "; does one side expect TLS and the other plain TCP?" if isinstance(exc, TransportTimeout) else ""
        raise type(exc)(f"{where} did not accept the connection: {exc}{hint}") from exc
    if bytes(greeting) != GREETING:
        await conn.close()
        raise FrameError(f"{where} is not an lpgan party (unexpected greeting {bytes(greeting[:40])!r})")
    conn.counters.frames_received = conn.counters.bytes_received = 0
    return conn


class Listener:
    """Accepts peers on a port; `accept` returns authenticated connections only."""

    def __init__(self, tls: TLSConfig | None, timeout: float, max_frame_bytes: int) -> None:
        self._tls = tls
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._accepted: asyncio.Queue[TcpTransport | TransportError] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._admissions: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def _new_connection(self) -> asyncio.BaseProtocol:
        conn = TcpTransport(self._tls, server_side=True, max_frame_bytes=self._max_frame_bytes)
        task = asyncio.get_running_loop().create_task(self._admit(conn))
        self._admissions.add(task)
        task.add_done_callback(self._admissions.discard)
        return conn._protocol

    async def _admit(self, conn: TcpTransport) -> None:
        try:
            try:
                await asyncio.wait_for(asyncio.shield(conn._protocol.ready), self._timeout)
            except TimeoutError:
                raise AuthenticationError(f"client {conn.peer_address} did not finish the TLS handshake "
                                          f"within {self._timeout:g} s (is it using plain TCP?)") from None
            except ConnectionClosed as exc:
                if self._tls is None:
                    raise
                raise AuthenticationError(f"client {conn.peer_address} left during the TLS handshake ({exc}); "
                                          "is it using plain TCP or another CA?") from exc
            conn.send(GREETING)
            conn.counters.frames_sent = conn.counters.bytes_sent = 0
            self._accepted.put_nowait(conn)
        except TransportError as exc:
            await conn.close()
            self._accepted.put_nowait(type(exc)(f"client {conn.peer_address}: {exc}"))

    async def accept(self, timeout: float | None = None) -> TcpTransport:
        """The next authenticated peer; raises what went wrong if a handshake failed."""
        try:
            item = await asyncio.wait_for(self._accepted.get(), timeout)
        except TimeoutError:
            raise ConnectionClosed(f"no peer connected within {timeout:g} s") from None
        if isinstance(item, TransportError):
            raise item
        return item

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._admissions):
            task.cancel()


async def listen(host: str, port: int, *, tls: TLSConfig | None, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, allow_plain_remote: bool = False) -> Listener:
    """Listen on host:port (0 picks a free port); handshakes must finish within `timeout`.
    `tls=None` (plain TCP) only on a loopback address, unless `allow_plain_remote`."""
    _check_plain_tcp(host, tls, allow_plain_remote)
    listener = Listener(tls, timeout, max_frame_bytes)
    loop = asyncio.get_running_loop()
    try:
        listener._server = await loop.create_server(listener._new_connection, host, port, reuse_address=True)
    except OSError as exc:
        raise ConnectionClosed(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                               "is another process using the port?") from exc
    return listener
