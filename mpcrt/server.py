"""An edge server: one computing party that runs the jobs a data owner starts, until stopped.

Everything arrives on one listening port, over mutual TLS, and the first frame of each
connection says what it is for (msgpack: channel, session):
- "control" from the owner: starts a job (its session id, the program's name from the
  server's registry, this party's dealer seed, protocol options, the program's arguments);
  then carries the owner's inputs and the party's outputs and events (mpcrt.owner);
- "dealer" from the owner: party 1's corrections (and public material) for that session;
- "peer" from the other edge server (party 1 dials party 0): the protocol's rounds.
One job runs at a time; a connection for another session is refused with a message that
says which job is running, and the parties' handshake checks the session id again. The
owner never sends code: it names a program the server was started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from mpcrt.dealer import DealerClient, RemoteDealer
from mpcrt.owner import OwnerLink
from mpcrt.runtime import Party, Program
from transports import TLSConfig, Transport, TransportError, WanTransport, connect, listen, load_credentials
from transports.wan import resolve_network

HANDSHAKE_TIMEOUT = 30.0
CONTROL, DEALER, PEER = "control", "dealer", "peer"


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
        try:
            first = msgpack.unpackb(await conn.recv(self.config.handshake_timeout))
            channel, session = first["channel"], first["session"]
            expected = self.peer_name if channel == PEER else "owner"
            who = getattr(conn, "peer_name", None)
            if channel not in (CONTROL, DEALER, PEER) or (who is not None and who != expected):
                raise ValueError(f"{who} may not open a {channel!r} channel")
        except (TransportError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            self.log(f"dropped a connection that did not introduce itself: {exc}")
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
        conn.send(msgpack.packb({"ok": True}))
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
        problem = self._check_spec(spec)
        if problem:
            await self._refuse(control, problem)
            return
        job = self.job = _Job(spec, control)
        control.send(msgpack.packb({"ok": True, "party": self.config.party_id}))
        try:
            await self._run(job)
        finally:
            self.job = None
            self.jobs_done += 1

    def _check_spec(self, spec: dict[str, Any]) -> str | None:
        if spec.get("party") != self.config.party_id:
            return (f"this server is party {self.config.party_id}, the job's configuration lists it as party "
                    f"{spec.get('party')}; swap the two servers' addresses in the job configuration")
        if spec.get("program") not in self.programs:
            return f"no program {spec.get('program')!r} here; this server runs {', '.join(sorted(self.programs))}"
        missing = [k for k in ("session", "seed", "args") if k not in spec]
        return f"the job description lacks {', '.join(missing)}; is the owner running the same lpgan version?" \
            if missing else None

    async def _run(self, job: _Job) -> None:
        spec, timeout = job.spec, float(job.spec.get("timeout", 120.0))
        link = OwnerLink(job.control, self.config.party_id, spec["seed"], timeout)

        def say(line: str) -> None:  # to this server's log and to the owner's copy of it
            self.log(line)
            link.event(log=line)

        dealer_conn = peer = None
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(link, timeout / 4))
        try:
            say(f"job {job.name!r} (session {job.session[:8]}, program {spec['program']}) started")
            dealer_conn = await self._attach(link, asyncio.shield(job.dealer), timeout, "the owner's dealer connection")
            peer = await self._attach(link, self._peer_link(job, timeout), timeout, f"the peer ({self.peer_name})")
            say(f"connected to the peer at {getattr(peer, 'peer_address', '?')} and to the dealer")
            model = resolve_network(spec.get("network"))
            if model is not None:
                peer = WanTransport(peer, model)
            if self.config.wrap is not None:
                peer = self.config.wrap(self.config.party_id, peer)
            dealer = DealerClient(self.config.party_id, spec["seed"],
                                  RemoteDealer(dealer_conn, self.config.party_id, timeout=timeout))
            party = Party(self.config.party_id, peer, timeout=timeout, frac_bits=spec.get("frac_bits", 16),
                          session=job.session, dealer=dealer, truncation=spec.get("truncation", "dealer"),
                          comparison=spec.get("comparison", "auto"), network=model, owner=link)
            args = {**spec["args"], "state_dir": str(self.config.state_dir / _safe(job.name))}
            start = time.perf_counter()
            await party.run(self.programs[spec["program"]], args)
            s = party.stats
            say(f"job {job.name!r} done in {time.perf_counter() - start:.1f} s: {s.rounds} rounds, "
                f"{s.bytes_sent / 1e6:.1f} MB sent to the peer")
            link.event(done=True, stats=s.as_dict())
        except BaseException as exc:
            message = ("the server was stopped while running the job" if isinstance(exc, asyncio.CancelledError)
                       else f"{type(exc).__name__}: {exc}")
            self.log(f"job {job.name!r} failed: {message}")
            if not isinstance(exc, TransportError | ConnectionError | TimeoutError | asyncio.CancelledError):
                self.log(traceback.format_exc().rstrip())
            link.error(message, type(exc).__name__)
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

    @staticmethod
    async def _heartbeat(link: OwnerLink, every: float) -> None:
        """Tell the owner this server is alive while a long step runs (its timeout counts silence)."""
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                link.event(alive=True)

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
