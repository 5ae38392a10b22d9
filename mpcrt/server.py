"""An edge server: one computing party that runs the jobs a data owner starts, until stopped.

Everything arrives on one listening port, over mutual TLS, and the first frame of each
connection says what it is for (msgpack: channel, session):
- "control" from the owner: starts a job (its session id, the program's name from the
  server's registry, this party's dealer seed, protocol options, the program's arguments);
  then carries the owner's inputs and the party's outputs and events (mpcrt.owner_link);
- "dealer" from the owner: party 1's corrections (and public material) for that session;
- "peer" from the other edge server (party 1 dials party 0): the protocol's rounds.
One job runs at a time; a connection for another session is refused with a message that
says which job is running, and the parties' handshake checks the session id again. The
owner never sends code: it names a program the server was started with.

No client can wedge a server: the job is cleared however its start ends (the owner may leave
before the answer, before its dealer channel, before the peer connects), a job whose owner
left ends at once, not at its timeout, and every value of the job description is checked
before the job is taken. Ordinary events (the owner left, a refused value or frame, the peer
failed) log one line saying what happened and what to do; only an unexpected exception, a
bug, logs its traceback (docs/DEPLOY.md, "What the server's log lines mean").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from mpcrt import ring
from mpcrt.dealer import DealerClient, RemoteDealer
from mpcrt.errors import MPCError
from mpcrt.ops.policy import METHODS as COMPARISONS
from mpcrt.ops.truncation import METHODS as TRUNCATIONS
from mpcrt.owner_link import OwnerFrameRefused, OwnerLink, OwnerLost
from mpcrt.runtime import PartySettings, Program
from transports import TLSConfig, Transport, TransportError, connect, listen, load_credentials
from transports.errors import ConnectionClosed, TransportTimeout
from transports.wan import resolve_network

HANDSHAKE_TIMEOUT = 30.0
CONTROL, DEALER, PEER = "control", "dealer", "peer"
# What a job description may hold (checked before the job is taken; see EdgeServer._spec_problem)
MAX_JOB_TIMEOUT = 86400.0  # seconds without progress: a day
MAX_NAME_CHARS = 200
SESSION_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")
SEED_BYTES = (16, 64)


class JobValueError(ValueError):
    """A program raises it (or a subclass) for job arguments it does not take: the server logs
    one line naming the value (no traceback) and the owner gets the message."""


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) as (host, port), with an error that shows the form."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 10.0.0.2:7000), got {text!r}")
    return host.strip("[]"), int(port)


async def hello(conn: Transport, fields: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
    """Send a channel's first frame and return the answer, raising a refusal as an error."""
    conn.send(msgpack.packb(fields))
    try:
        answer = msgpack.unpackb(await conn.recv(timeout))
    except TransportError as exc:
        raise ConnectionError(f"{what} did not answer: {exc}") from exc
    if not isinstance(answer, dict) or "error" in answer or not answer.get("ok"):
        raise JobRefused(f"{what} refused: {answer.get('error', answer) if isinstance(answer, dict) else answer}")
    return answer


class JobRefused(ConnectionError):
    """A server refused a connection for a job (busy, another session, wrong role)."""


@dataclass
class ServerConfig:
    party_id: int
    listen: tuple[str, int]
    peer: tuple[str, int]
    certs: Path
    state_dir: Path
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    wrap: Callable[[int, Transport], Transport] | None = None  # a transport of one's own around the peer link


class _Job:
    def __init__(self, spec: dict[str, Any], control: Transport) -> None:
        loop = asyncio.get_running_loop()
        self.spec = spec
        self.session: str = spec["session"]
        self.name: str = spec.get("name", "job")
        self.control = control
        self.dealer: asyncio.Future[Transport] = loop.create_future()
        self.peer: asyncio.Future[Transport] = loop.create_future()


class EdgeServer:
    """Serves jobs as party `config.party_id` with the programs of `programs` (name -> program)."""

    def __init__(self, config: ServerConfig, programs: dict[str, Program],
                 log: Callable[[str], None] = print) -> None:
        if config.party_id not in (0, 1):
            raise ValueError(f"party must be 0 or 1, got {config.party_id!r}")
        self.config = config
        self.programs = programs
        self._print = log
        self.credentials = load_credentials(config.certs, f"party{config.party_id}")
        self.peer_name = f"party{1 - config.party_id}"
        self.job: _Job | None = None
        self.jobs_done = 0
        self.port: int | None = None
        self._tasks: set[asyncio.Task] = set()

    def log(self, line: str) -> None:
        self._print(f"{time.strftime('%H:%M:%S')} server {self.config.party_id}: {line}")

    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Accept connections and run jobs until cancelled; `ready(port)` once listening."""
        tls = TLSConfig(self.credentials, ("owner", self.peer_name))
        host, port = self.config.listen
        listener = await listen(host, port, tls=tls, timeout=self.config.handshake_timeout)
        self.port = listener.port
        self.log(f"listening on {host}:{listener.port} (TLS 1.3, mutual authentication); peer server at "
                 f"{self.config.peer[0]}:{self.config.peer[1]}; state in {self.config.state_dir}")
        if ready is not None:
            ready(listener.port)
        try:
            while True:
                try:
                    conn = await listener.accept()
                except TransportError as exc:
                    self.log(f"refused a connection: {exc}")
                    continue
                self._spawn(self._route(conn))
        finally:
            await listener.close()
            for task in list(self._tasks):
                task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, conn: Transport) -> None:
        """Handle one accepted connection; whatever happens, it ends closed or handed to the
        job, the job is cleared when it ends, and nothing escapes (an unexpected exception is
        logged with its traceback: a bug)."""
        try:
            await self._introduce(conn)
        except Exception:
            self.log(f"an unexpected error while handling a connection from {_origin(conn)}; this is a bug, please "
                     f"report it with these lines:\n{traceback.format_exc().rstrip()}")
            with contextlib.suppress(Exception):
                await conn.close()

    async def _introduce(self, conn: Transport) -> None:
        try:
            first = msgpack.unpackb(await conn.recv(self.config.handshake_timeout))
            channel, session = first["channel"], first["session"]
            expected = self.peer_name if channel == PEER else "owner"
            who = getattr(conn, "peer_name", None)
            if channel not in (CONTROL, DEALER, PEER) or (who is not None and who != expected):
                raise ValueError(f"{who} may not open a {str(channel)[:40]!r} channel")
        except (TransportError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            if isinstance(exc, TransportTimeout):
                what = f"sent no first frame within {self.config.handshake_timeout:g} s; nothing to do"
            elif isinstance(exc, ConnectionClosed):
                what = f"left first ({_short(exc)}); nothing to do"
            else:
                what = (f"sent a first frame this server cannot use ({_short(exc)}); if it was an owner or the peer "
                        "server, check that both run the same lpgan version")
            self.log(f"dropped a connection from {_origin(conn)} that did not introduce itself: it {what}")
            await conn.close()
            return
        if channel == CONTROL:
            await self._start(conn, first)
            return
        job = self.job
        if job is None or job.session != session:
            running = f"job {job.name!r} (session {job.session[:8]})" if job else "no job"
            await self._refuse(conn, f"server {self.config.party_id} runs {running}; a {channel} connection for "
                                     f"session {str(session)[:8]} is refused")
            return
        future = job.dealer if channel == DEALER else job.peer
        if future.done():
            why = "has ended" if future.cancelled() else f"already has its {channel} connection"
            await self._refuse(conn, f"job {job.name!r} {why}")
            return
        try:
            conn.send(msgpack.packb({"ok": True}))
        except TransportError as exc:
            self.log(f"job {job.name!r}: its {channel} connection from {_origin(conn)} closed before it was answered "
                     f"({_short(exc)}); the job waits for another, or ends at its timeout or when the owner leaves")
            await conn.close()
            return
        future.set_result(conn)

    async def _refuse(self, conn: Transport, reason: str) -> None:
        self.log(reason)
        with contextlib.suppress(TransportError):
            conn.send(msgpack.packb({"error": reason}))
        await conn.close()

    async def _start(self, control: Transport, spec: dict[str, Any]) -> None:
        if self.job is not None:
            await self._refuse(control, f"server {self.config.party_id} is busy with job {self.job.name!r} "
                                        f"(session {self.job.session[:8]}); one job at a time, try again when it ends")
            return
        problem = self._spec_problem(spec)
        if problem:
            await self._refuse(control, f"server {self.config.party_id} refuses the job: {problem}")
            return
        job = self.job = _Job(spec, control)
        try:  # from here on the job is cleared however its start or its run ends
            try:
                control.send(msgpack.packb({"ok": True, "party": self.config.party_id}))
            except TransportError as exc:
                self.log(f"job {job.name!r} (session {job.session[:8]}) did not start: the owner left before this "
                         f"server's answer ({_short(exc)}); nothing ran, the server is ready for the next job")
                await control.close()
                return
            self.jobs_done += 1
            await self._run(job)
        finally:
            for late in (job.dealer, job.peer):  # a connection arriving from now on is refused, not left open
                if not late.done():
                    late.cancel()
            self.job = None

    def _spec_problem(self, spec: dict[str, Any]) -> str | None:
        """Why this server does not take the job description `spec` (the control frame), or
        None: every value it uses, checked before the job is taken."""
        where = "the job configuration"
        if spec.get("party") != self.config.party_id or isinstance(spec.get("party"), bool):
            return (f"this server is party {self.config.party_id}, the job's configuration lists it as party "
                    f"{_short(spec.get('party'))}; swap the two servers' addresses in the job configuration")
        program = spec.get("program")
        if not isinstance(program, str) or program not in self.programs:
            return f"no program {_short(program)} here; this server runs {', '.join(sorted(self.programs))}"
        missing = [k for k in ("session", "seed", "args") if k not in spec]
        if missing:
            return f"the job description lacks {', '.join(missing)}; is the owner running the same lpgan version?"
        session, name, seed, args = spec["session"], spec.get("name", "job"), spec["seed"], spec["args"]
        if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
            return f"the session id {_short(session)} is not 1 to 128 letters, digits, '-' or '_'"
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
            return f"the job's name {_short(name)} is not 1 to {MAX_NAME_CHARS} characters; set name in {where}"
        if not isinstance(seed, bytes) or not SEED_BYTES[0] <= len(seed) <= SEED_BYTES[1]:
            return (f"the dealer seed is not {SEED_BYTES[0]} to {SEED_BYTES[1]} bytes; is the owner's lpgan the same "
                    "version as this server's?")
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            return f"the program's arguments are a {type(args).__name__}, not a map with text keys"
        timeout = spec.get("timeout", 120.0)
        if (not isinstance(timeout, int | float) or isinstance(timeout, bool) or not math.isfinite(timeout)
                or not 0 < timeout <= MAX_JOB_TIMEOUT):
            return (f"timeout must be a number of seconds above 0 and at most {MAX_JOB_TIMEOUT:g}, got "
                    f"{_short(timeout)}; set [servers] timeout in {where}")
        frac_bits = spec.get("frac_bits", ring.DEFAULT_FRAC_BITS)
        if not isinstance(frac_bits, int) or isinstance(frac_bits, bool):
            return f"frac_bits must be an integer, got {_short(frac_bits)}; set [protocol] frac_bits in {where}"
        try:
            ring.check_frac_bits(frac_bits)
        except ValueError as exc:
            return f"{exc}; set [protocol] frac_bits in {where}"
        choices = {"truncation": ("dealer", TRUNCATIONS), "comparison": ("auto", ("auto", *COMPARISONS))}
        for key, (default, allowed) in choices.items():
            if spec.get(key, default) not in allowed:
                return (f"{key} must be one of {', '.join(allowed)}, got {_short(spec.get(key))}; set [protocol] {key} "
                        f"in {where}")
        for key in ("network", "owner_network"):
            try:
                resolve_network(spec.get(key))
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                return f"its {key}: {_short(exc, 300)}; set [protocol] {key} in {where}"
        return None

    async def _run(self, job: _Job) -> None:
        spec, timeout = job.spec, float(job.spec.get("timeout", 120.0))
        link = OwnerLink(job.control, self.config.party_id, spec["seed"], timeout)

        def say(line: str) -> None:  # to this server's log and to the owner's copy of it
            self.log(line)
            link.log(line)

        dealer_conn = peer = None
        finished = False
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(link, timeout / 4))
        try:
            say(f"job {job.name!r} (session {job.session[:8]}, program {spec['program']}) started")
            dealer_conn = await self._attach(link, asyncio.shield(job.dealer), timeout, "the owner's dealer connection")
            peer = await self._attach(link, self._peer_link(job, timeout), timeout, f"the peer ({self.peer_name})")
            say(f"connected to the peer at {getattr(peer, 'peer_address', '?')} and to the dealer")
            settings = PartySettings(timeout, spec.get("frac_bits", ring.DEFAULT_FRAC_BITS),
                                     spec.get("truncation", "dealer"), spec.get("comparison", "auto"),
                                     resolve_network(spec.get("network")), resolve_network(spec.get("owner_network")),
                                     session=job.session)
            peer = settings.peer_link(self.config.party_id, peer, self.config.wrap)
            dealer_conn = settings.dealer_link(dealer_conn)
            dealer = DealerClient(self.config.party_id, spec["seed"],
                                  RemoteDealer(dealer_conn, self.config.party_id, timeout=timeout))
            party = settings.party(self.config.party_id, peer, dealer, owner=link)
            args = {**spec["args"], "state_dir": str(self.config.state_dir / _safe(job.name))}
            start = time.perf_counter()
            await party.run(self.programs[spec["program"]], args)
            finished = True
            s = party.stats
            line = (f"job {job.name!r} done in {time.perf_counter() - start:.1f} s: {s.rounds} rounds, "
                    f"{s.bytes_sent / 1e6:.1f} MB sent to the peer")
            self.log(line)
            link.log(line)
            link.finished(s.as_dict())
        except BaseException as exc:
            if finished and isinstance(exc, OwnerLost):
                self.log(f"job {job.name!r}: the owner left before this server's final report reached it; "
                         "nothing to do, the server is ready for the next job")
            else:
                self._failed(job, exc)
                link.error(_message(exc), type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            heartbeat.cancel()
            for late in (job.dealer, job.peer):  # a connection arriving from now on is refused, not left open
                if not late.done():
                    late.cancel()
            await link.close()
            attached = [f.result() for f in (job.dealer, job.peer) if f.done() and not f.cancelled()
                        and f.exception() is None]
            for conn in {id(c): c for c in (dealer_conn, peer, *attached) if c is not None}.values():
                await conn.close()

    def _failed(self, job: _Job, exc: BaseException) -> None:
        """One line for an ordinary end of a job (what happened, what to do); the traceback
        too for an unexpected exception (a bug)."""
        head = f"job {job.name!r} failed: "
        if isinstance(exc, asyncio.CancelledError):
            self.log(head + "the server was stopped while running the job; the owner was told")
        elif isinstance(exc, OwnerFrameRefused):
            self.log(head + f"{exc}; the owner's lpgan may differ from this server's; the server is ready for the "
                            "next job")
        elif isinstance(exc, OwnerLost):
            self.log(head + f"the owner is gone or silent ({exc}); the owner may start the job again, the server is "
                            "ready for it")
        elif isinstance(exc, JobValueError):
            self.log(head + f"the owner's job values are refused: {exc}; the owner must change them")
        elif isinstance(exc, JobRefused):
            self.log(head + f"{exc}; was the job started at both servers? the server is ready for the next job")
        elif isinstance(exc, TimeoutError) and not isinstance(exc, MPCError):
            self.log(head + f"{exc}; is the owner or the peer still running? the server is ready for the next job")
        elif isinstance(exc, MPCError | ConnectionError | TimeoutError):
            self.log(head + f"{type(exc).__name__}: {exc}")
        else:
            self.log(head + f"an unexpected {type(exc).__name__}: {exc}; this is a bug in the program or the server, "
                            f"please report it with these lines:\n{traceback.format_exc().rstrip()}")

    @staticmethod
    async def _heartbeat(link: OwnerLink, every: float) -> None:
        """Tell the owner this server is alive while a long step runs (its timeout counts silence)."""
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                link.alive()

    async def _attach(self, link: OwnerLink, waiting: Any, timeout: float, what: str) -> Transport:
        """What `waiting` gives, unless the owner leaves first or `timeout` passes."""
        got = asyncio.ensure_future(waiting)
        lost = asyncio.ensure_future(link.wait_lost())
        try:
            done, _ = await asyncio.wait({got, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if got in done:
                return got.result()
            if lost in done:
                raise lost.result()
            raise TimeoutError(f"{what} did not arrive within {timeout:g} s")
        finally:
            lost.cancel()
            if not got.done():
                got.cancel()
                got.add_done_callback(self._discard)

    def _discard(self, task: asyncio.Future) -> None:
        """The end of a wait given up (the owner left, the timeout passed): a connection it made
        anyway is closed, an error it ended with (a refusal that was already on its way: it
        would log "exception was never retrieved" with a traceback) is dropped."""
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        if isinstance(conn, Transport):
            self._spawn(conn.close())

    async def _peer_link(self, job: _Job, timeout: float) -> Transport:
        """Party 1 dials party 0 (retrying while it is not up); party 0 waits for it."""
        if self.config.party_id == 0:
            return await asyncio.shield(job.peer)
        host, port = self.config.peer
        conn = await connect(host, port, tls=TLSConfig(self.credentials, self.peer_name), timeout=timeout)
        try:
            await hello(conn, {"channel": PEER, "session": job.session}, timeout, f"the peer server at {host}:{port}")
        except BaseException:
            await conn.close()
            raise
        return conn


def _safe(name: str) -> str:
    """A job name as one path component."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "job"


def _origin(conn: Transport) -> str:
    """Who is at the other end of `conn`, for a log line: its certificate's name and address."""
    address = getattr(conn, "peer_address", None)
    if isinstance(address, tuple) and len(address) >= 2:
        address = f"{address[0]}:{address[1]}"
    where = address if isinstance(address, str) else "?"
    return f"{getattr(conn, 'peer_name', None) or 'a client'} at {where}"


def _short(value: object, limit: int = 80) -> str:
    """A value from a client, for a log line: its repr (control characters escaped), cut short
    (an exception's message: to 5 times `limit`)."""
    limit = limit * 5 if isinstance(value, BaseException) else limit
    text = repr(value) if not isinstance(value, BaseException) else str(value) or type(value).__name__
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else f"{text[:limit]}..."


def _message(exc: BaseException) -> str:
    """What the owner is told of a failed job."""
    if isinstance(exc, asyncio.CancelledError):
        return "the server was stopped while running the job"
    return f"{type(exc).__name__}: {exc}"
