"""Frames over TCP, with TLS 1.3 and mutual authentication unless plain TCP is asked for.

Frames are a 12-byte header and the payload. Plain TCP reads payloads straight into
their final bytearray (asyncio BufferedProtocol) and writes header + caller buffers
without joining them. TLS runs in our own protocol over an `ssl.SSLObject` and memory
BIOs, so decrypted bytes land directly in frame buffers too, and so handshake failures
reach our code on both sides (asyncio's server-side TLS only logs them). After the
handshake and the identity check the server sends one greeting frame: when `connect`
returns, the server has accepted us.

A listener accepts in its own loop, so no failed accept (out of file descriptors, a
connection reset before it was set up) ever stops it, and it holds at most `max_pending`
connections that have not authenticated yet, each for at most `timeout` seconds: a flood
of connections that never finish the handshake costs a bounded number of descriptors.

Plain TCP (`tls=None`) is for this machine only: it authenticates nobody (a dealer behind it
cannot tell party 0 from party 1) and encrypts nothing, so `connect` and `listen` refuse it
for any address but loopback (unless `allow_plain_remote=True` says so, for measurements
between private network namespaces).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import ssl
from typing import Any

from transports.base import DEFAULT_MAX_FRAME_BYTES, Frame, InboxTransport, frame_parts
from transports.errors import AuthenticationError, ConnectionClosed, FrameError, TransportError, TransportTimeout
from transports.framing import FrameDecoder, frame_header
from transports.tls import TLSConfig, describe_ssl_error

GREETING = b"lpgan-transport-1 ready"
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_PENDING = 64  # unauthenticated connections a listener holds at once (docs/DEPLOY.md)
REPORT_WINDOW = 60.0  # seconds; a kind of failed connection is reported a few times per window, then counted
_REPORT_BURST = {"handshake": 10, "capacity": 1, "accept": 1}
_BACKLOG = 128
_TLS_WRITE_CHUNK = 1 << 18
_SEE_DOCS = "docs/DEPLOY.md, 'Connection limits'"


class TcpTransport(InboxTransport):
    """One end of a framed TCP (or TLS) connection."""

    def __init__(self, tls: TLSConfig | None, *, server_side: bool,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, context: ssl.SSLContext | None = None) -> None:
        """`context`: tls's context for this side, when the caller made it already (a listener
        makes one for all its connections)."""
        super().__init__(max_frame_bytes)
        if tls is not None:
            context = context or tls.context(server_side=server_side)
            self._protocol: _FrameProtocol = _TlsFrameProtocol(self, tls, context, server_side)
        else:
            self._protocol = _PlainFrameProtocol(self)
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

    def abort(self) -> None:
        """Close at once, dropping queued writes (for a connection given up mid-set-up)."""
        self._closed = True
        self._wake()
        if self._protocol.transport is not None:
            self._protocol.transport.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        transport = self._protocol.transport
        if transport is None:
            return  # never connected
        if not transport.is_closing():
            transport.close()  # flushes queued writes first
        await self._protocol.wait_closed(timeout=5.0)


class _FrameProtocol(asyncio.BaseProtocol):
    """What plain TCP and TLS share: frames out, decoded frames in, readiness, the end.

    Not itself a BufferedProtocol: the standard loop picks its read path by isinstance,
    and TLS must get data_received."""

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
        if self._attach(transport):
            self._set_ready()

    def _attach(self, transport: asyncio.BaseTransport) -> bool:
        """Keep `transport`; False, and the connection dropped, if it was aborted before it was set up."""
        self.transport = transport  # type: ignore[assignment]
        if self.ready.done() and self.ready.exception() is not None:
            transport.abort()  # type: ignore[attr-defined]
            return False
        return True

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def write_parts(self, parts: list[memoryview]) -> None:
        assert self.transport is not None
        self.transport.writelines(parts)

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


class _PlainFrameProtocol(_FrameProtocol, asyncio.BufferedProtocol):
    """Plain TCP: the kernel writes straight into the decoder's buffers."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._advance(nbytes)


class _TlsFrameProtocol(_FrameProtocol, asyncio.Protocol):
    """TLS 1.3 over memory BIOs; decrypted bytes are read into the decoder's buffers."""

    def __init__(self, owner: TcpTransport, tls: TLSConfig, context: ssl.SSLContext, server_side: bool) -> None:
        super().__init__(owner)
        self.tls = tls
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=None if server_side else tls.peer_names[0])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._attach(transport):
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
                del buf  # no view may outlive the read: the decoder grows frames in place
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
    """The peer may simply not be up yet (refused, unreachable for now, slow), or its
    listener dropped us while setting up (reset or aborted: a full accept queue)."""
    return isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError | TimeoutError) \
        or exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                         errno.ENETUNREACH, errno.EAGAIN)


async def connect(host: str, port: int, *, tls: TLSConfig | None, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, allow_plain_remote: bool = False) -> TcpTransport:
    """Connect to a listening peer, retrying with backoff while it is not up yet.

    `tls=None` means plain TCP and must be asked for explicitly (loopback only, unless
    `allow_plain_remote`).
    """
    _check_plain_tcp(host, tls, allow_plain_remote)
    context = tls.context(server_side=False) if tls is not None else None  # once, not per attempt
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    where = f"{host}:{port}"
    while True:
        conn = TcpTransport(tls, server_side=False, max_frame_bytes=max_frame_bytes, context=context)
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
    except BaseException:  # cancelled while waiting for the greeting: leave no socket open
        conn.abort()
        raise
    if bytes(greeting) != GREETING:
        await conn.close()
        raise FrameError(f"{where} is not an lpgan party (unexpected greeting {bytes(greeting[:40])!r})")
    conn.counters.frames_received = conn.counters.bytes_received = 0
    return conn


class _Window:
    """One kind of failed connection within one report window."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.shown = 0
        self.held = 0
        self.last: TransportError | None = None
        self.timer: asyncio.TimerHandle | None = None


class Listener:
    """Accepts peers on a port; `accept` returns authenticated connections only.

    At most `max_pending` connections may be unauthenticated at once (accepted, handshake not
    finished); one more closes the oldest of them, so a flood can neither take every file
    descriptor nor keep a client that authenticates promptly out. Each may take `timeout` s.
    """

    def __init__(self, tls: TLSConfig | None, timeout: float, max_frame_bytes: int,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._tls = tls
        # once per listener: no certificate file is read for a connection nobody has authenticated
        self._context = tls.context(server_side=True) if tls is not None else None
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self.max_pending = max_pending
        self._accepted: asyncio.Queue[TcpTransport | TransportError] = asyncio.Queue()
        self._sockets: list[socket.socket] = []
        # not authenticated yet, oldest first, with the socket while it is not yet handed to the event loop
        self._pending: dict[TcpTransport, socket.socket | None] = {}
        self._evicted: set[TcpTransport] = set()
        self._tasks: set[asyncio.Task] = set()
        self._windows: dict[str, _Window] = {}
        self.evicted = 0  # connections closed unauthenticated to stay within max_pending or the fd limit
        self.accept_failures = 0  # failed accepts (out of file descriptors, ...); the listener went on

    @property
    def port(self) -> int:
        return self._sockets[0].getsockname()[1]

    @property
    def pending(self) -> int:
        """Connections accepted that have not authenticated yet."""
        return sum(not conn._protocol.ready.done() for conn in self._pending)

    def _oldest(self) -> TcpTransport | None:
        """The oldest connection still authenticating (one that just did waits for its callback)."""
        return next((conn for conn in self._pending if not conn._protocol.ready.done()), None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        """Accept until closed: whatever goes wrong with one accept, the next one is tried."""
        loop = asyncio.get_running_loop()
        pause = 0.01
        while True:
            try:
                client, address = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError, BlockingIOError):
                continue  # the client left before we took it
            except OSError as exc:
                self.accept_failures += 1
                oldest = self._oldest()
                if exc.errno in (errno.EMFILE, errno.ENFILE) and oldest is not None:
                    await self._evict_to_free(oldest, f"{_out_of_descriptors(exc)}; it was the oldest "
                                                      "unauthenticated one")
                    continue
                self._report("accept", TransportError(f"cannot accept a connection on port {self.port}: "
                                                      f"{_accept_problem(exc)}; still listening, retrying"))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            except Exception as exc:  # an event loop's own failure: keep listening, but do not spin
                self.accept_failures += 1
                self._report("accept", TransportError(f"accepting on port {self.port} failed ({exc!r}); "
                                                      "still listening, retrying"))
                await asyncio.sleep(1.0)
                continue
            pause = 0.01
            try:
                self._start(client, address)
            except Exception as exc:  # one connection's set-up must never stop the listener
                client.close()
                self.accept_failures += 1
                self._report("accept", TransportError(f"could not set up the connection from {address} ({exc!r}); "
                                                      "still listening"))

    def _start(self, client: socket.socket, address: Any) -> None:
        oldest = self._oldest() if self.pending >= self.max_pending else None
        if oldest is not None:
            self._evict(oldest, f"more than max_pending={self.max_pending} connections were waiting to "
                                f"authenticate, and it was the oldest (a connection flood, or raise max_pending; "
                                f"{_SEE_DOCS})")
        conn = TcpTransport(self._tls, server_side=True, max_frame_bytes=self._max_frame_bytes, context=self._context)
        self._pending[conn] = client
        conn._protocol.ready.add_done_callback(lambda _: self._pending.pop(conn, None))
        self._spawn(self._admit(conn, client, address))

    def _evict(self, conn: TcpTransport, why: str) -> None:
        self.evicted += 1
        self._evicted.add(conn)
        self._drop(conn, ConnectionClosed(f"closed before it authenticated: {why}"))

    def _drop(self, conn: TcpTransport, error: TransportError) -> None:
        """Close a connection that has not authenticated, wherever its set-up is."""
        client = self._pending.pop(conn, None)
        conn._protocol._abort(error)  # or, while the loop is still setting it up, in connection_made
        if client is not None:  # not handed to the event loop yet: ours to close
            client.close()

    async def _evict_to_free(self, conn: TcpTransport, why: str) -> None:
        """Close an unauthenticated connection and wait until its descriptor is free."""
        self._evict(conn, why)
        if conn._protocol.transport is not None:
            await conn._protocol.wait_closed(timeout=1.0)
        else:
            await asyncio.sleep(0)

    async def _admit(self, conn: TcpTransport, client: socket.socket, address: Any) -> None:
        protocol = conn._protocol
        try:
            if protocol.ready.done():  # evicted before it was set up (and its socket closed)
                protocol.ready.result()  # raises why
            self._pending[conn] = None  # the event loop's from here on
            try:
                await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, client)
            except OSError as exc:  # the client reset in between
                client.close()
                raise ConnectionClosed(f"left before its connection was set up ({exc})") from exc
            try:
                await asyncio.wait_for(asyncio.shield(protocol.ready), self._timeout)
            except TimeoutError:
                raise AuthenticationError(f"did not finish the TLS handshake within {self._timeout:g} s "
                                          "(is it using plain TCP?)") from None
            except ConnectionClosed as exc:
                if self._tls is None or conn in self._evicted:
                    raise
                raise AuthenticationError(f"left during the TLS handshake ({exc}); "
                                          "is it using plain TCP or another CA?") from exc
            conn.send(GREETING)
            conn.counters.frames_sent = conn.counters.bytes_sent = 0
            self._accepted.put_nowait(conn)
        except asyncio.CancelledError:  # the listener is closing: nobody will take this connection
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        except TransportError as exc:
            self._pending.pop(conn, None)
            await conn.close()
            kind = "capacity" if conn in self._evicted else "handshake"
            self._evicted.discard(conn)
            self._report(kind, type(exc)(f"client {_address(address)}: {exc}"))

    def _report(self, kind: str, error: TransportError) -> None:
        """Queue `error` for accept(): each kind a few times per REPORT_WINDOW, then only counted and
        summed up at the window's end, so a flood fills neither the log nor an unread queue."""
        loop = asyncio.get_running_loop()
        window = self._windows.get(kind)
        if window is not None and loop.time() - window.start >= REPORT_WINDOW:
            self._flush(kind)
            window = None
        if window is None:
            window = self._windows[kind] = _Window(loop.time())
        if window.shown < _REPORT_BURST[kind]:
            window.shown += 1
            self._accepted.put_nowait(error)
            return
        window.held += 1
        window.last = error
        if window.timer is None:
            window.timer = loop.call_at(window.start + REPORT_WINDOW, self._flush, kind)

    def _flush(self, kind: str) -> None:
        window = self._windows.pop(kind, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if window.held and window.last is not None:
            self._accepted.put_nowait(type(window.last)(
                f"{window.held} more connection(s) failed like this in the last {REPORT_WINDOW:g} s "
                f"(not reported one by one); the last: {window.last}"))

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
        """Stop listening; connections not yet authenticated are closed, accepted ones are the caller's."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for conn in list(self._pending):
            self._drop(conn, ConnectionClosed("the listener was closed before this client authenticated"))
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # let cancelled accepts unregister first
        for sock in self._sockets:
            sock.close()


def _address(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


def _descriptor_limit() -> str:
    try:
        import resource
    except ImportError:  # not on Windows
        return ""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return f" (limit: {soft})" if soft != resource.RLIM_INFINITY else ""


def _out_of_descriptors(exc: OSError) -> str:
    which = "the system" if exc.errno == errno.ENFILE else "this process"
    return (f"{which} ran out of file descriptors{_descriptor_limit() if exc.errno == errno.EMFILE else ''}; "
            f"raise the limit (`ulimit -n`, systemd LimitNOFILE; {_SEE_DOCS})")


def _accept_problem(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return _out_of_descriptors(exc)
    if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
        return f"out of memory ({exc.strerror})"
    return str(exc.strerror or exc)


def _listening_sockets(infos: list, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for each address; with port 0 all share the first's
    port, picked again if a later address has it taken."""
    for attempt in range(7):
        try:
            return _bind_all(infos, port)
        except OSError as exc:  # with port 0, only a later address can find its port taken
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 6:
                raise
    raise AssertionError("unreachable")


def _bind_all(infos: list, port: int) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":  # as asyncio does: a restarted server may bind at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def listen(host: str, port: int, *, tls: TLSConfig | None, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, allow_plain_remote: bool = False,
                 max_pending: int = DEFAULT_MAX_PENDING) -> Listener:
    """Listen on host:port (0 picks a free port); handshakes must finish within `timeout`, and at most
    `max_pending` connections may be waiting to finish theirs (more close the oldest).
    `tls=None` (plain TCP) only on a loopback address, unless `allow_plain_remote`."""
    _check_plain_tcp(host, tls, allow_plain_remote)
    listener = Listener(tls, timeout, max_frame_bytes, max_pending)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"no address found for {host!r}")
        listener._sockets = _listening_sockets(list({info[4]: info for info in infos}.values()), port)
    except OSError as exc:
        raise ConnectionClosed(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                               "is another process using the port?") from exc
    for sock in listener._sockets:
        listener._spawn(listener._serve(sock))
    return listener
