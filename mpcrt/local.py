"""Run both parties of a program on this machine: in one event loop, or as two processes.

This is what tests, benchmarks and the single-machine demo use; real deployments run
one party per machine (see the `lpgan serve` command).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing as mp
import pickle
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from mpcrt import prg, ring
from mpcrt.dealer import CorrectionSource, DealerClient, DealerLimits, DealerService, LocalDealer, RemoteDealer, Request
from mpcrt.errors import PeerAborted, PeerLost, PeerTimeout
from mpcrt.offline import record_plan
from mpcrt.owner_link import OwnerClient, OwnerLink, ServerFailed
from mpcrt.runtime import DEFAULT_TIMEOUT, PartySettings, Program
from transports import (
    NetworkModel,
    TLSConfig,
    Transport,
    connect,
    generate_certificates,
    listen,
    pair,
    resolve_network,
)
from transports.certs import Credentials
from transports.loop import new_event_loop
from transports.loop import run as run_loop

LOOPBACK = "127.0.0.1"
_credentials: dict[str, Credentials] = {}


@dataclass(frozen=True)
class _LocalRun:
    """What run_local's parties and their dealer are made from (it pickles: processes=True)."""

    settings: PartySettings
    tls: bool
    dealer: str  # "local" or "service"
    seeds: tuple[bytes, bytes]
    plan: list[Request] | None
    wrap: Callable[[int, Transport], Transport] | None
    dealer_port: int = 0  # the dealer service's, with processes=True
    dealer_workers: int = 0  # processes that make the dealer service's material (mpcrt.dealer.workers)


def local_credentials() -> dict[str, Credentials]:
    """A throwaway CA and party certificates for this process (made once, removed at exit)."""
    if not _credentials:
        directory = tempfile.mkdtemp(prefix="mpcrt-certs-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _credentials.update(generate_certificates(directory, ("party0", "party1", "owner")))
    return _credentials


def tls_config(party_id: int, tls: bool, credentials: dict[str, Credentials] | None = None) -> TLSConfig | None:
    if not tls:
        return None
    creds = credentials or local_credentials()
    return TLSConfig(creds[f"party{party_id}"], f"party{1 - party_id}")


def run_local(program: Program, *args: Any, transport: str = "memory", network: Any = None,
              processes: bool = False, tls: bool = True, timeout: float = DEFAULT_TIMEOUT,
              frac_bits: int = ring.DEFAULT_FRAC_BITS, dealer: str = "local", truncation: str = "dealer",
              comparison: str = "auto", offline: bool = False, plan: list[Request] | None = None,
              wrap: Callable[[int, Transport], Transport] | None = None, owner_network: Any = None,
              dealer_workers: int = 0) -> tuple[Any, Any]:
    """Run `program(party, *args)` as party 0 and party 1; returns (result0, result1).

    transport: "memory" (one process) or "tcp" (real sockets on loopback, TLS 1.3 with
    mutual authentication unless tls=False). tls=False is for local measurements only: plain
    TCP on loopback (transports refuse it elsewhere), and the dealer service then skips the
    party's identity (it serves whichever party a connection says it is). network: None, "lan", "wan", "mobile", a
    NetworkModel or {"bandwidth_mbps":..., "rtt_ms":...}: simulated on top of the transport.
    owner_network: the link from the dealer (the owner) to each party, declared the same way:
    "auto" weighs the material's bytes on it, and the dealer service's connections simulate
    it (dealer="service" or processes=True; the in-process dealer has no link to simulate).
    processes=True runs each party in its own OS process over TCP (program and args must
    pickle). dealer: "local" (in this process) or "service" (a dealer service over TLS, as
    the owner runs it; always so with processes=True, so party 1 never holds party 0's seed).
    offline=True: a dry run records the program's dealer requests, and both parties fetch
    all their material before the program starts (reported in stats.offline). plan: such a
    list of requests given instead of the dry run (mpcrt.offline.record_plan; e.g. the part of
    a longer program's plan that its timed part needs); material outside it is fetched on demand.
    comparison: "auto" (per call, from the network's modelled cost), "tree", "lpgan" or "dcf".
    wrap(party_id, transport): a transport of your own around each party's link (outermost,
    after any simulated network; must pickle with processes=True).
    dealer_workers: processes that make the dealer service's material (mpcrt.dealer.workers;
    0: the service's own process makes it); for an owner with cores to spare. They are
    spawned: the main module must guard its entry point, as processes=True needs.
    A party's exception is re-raised with `.party_id` and a note naming the party.
    """
    if transport not in ("memory", "tcp"):
        raise ValueError(f"transport must be 'memory' or 'tcp', got {transport!r}")
    if dealer not in ("local", "service"):
        raise ValueError(f"dealer must be 'local' or 'service', got {dealer!r}")
    if offline and plan is not None:
        raise ValueError("give either offline=True (a dry run records the plan) or a plan, not both")
    model, owner_model = resolve_network(network), resolve_network(owner_network)
    if offline:
        plan = run_loop(record_plan(program, *args, frac_bits=frac_bits, truncation=truncation,
                                    comparison=comparison, network=model, timeout=timeout, owner_network=owner_model))
    settings = PartySettings(timeout, frac_bits, truncation, comparison, model, owner_model)
    if dealer_workers and not (processes or dealer == "service"):
        raise ValueError("dealer_workers make the dealer service's material: give dealer='service' or processes=True")
    options = _LocalRun(settings, tls, dealer, (prg.new_key(), prg.new_key()), plan, wrap,
                        dealer_workers=dealer_workers)
    if processes:
        return _run_processes(program, args, options)
    results = run_loop(_run_in_one_loop(program, args, transport, options))
    return _collect(results)


def run_with_owner(program: Program, owner_program: Callable[..., Awaitable[Any]], *args: Any,
                   network: Any = None, timeout: float = DEFAULT_TIMEOUT, frac_bits: int = ring.DEFAULT_FRAC_BITS,
                   truncation: str = "dealer", comparison: str = "auto",
                   seeds: tuple[bytes, bytes] | None = None,
                   dealer_limits: DealerLimits | None = None, owner_network: Any = None) -> tuple[Any, Any, Any]:
    """Run a job with a data owner in one process: `owner_program(client, *args)` (an
    mpcrt.owner_link.OwnerClient: it shares inputs and receives outputs) beside
    `program(party, *args)` on parties 0 and 1, which read the owner's inputs through
    `party.owner`. The owner is the dealer, as in `lpgan train`. Returns (owner's result,
    party 0's, party 1's); a party's failure is raised in preference to what it caused.
    `seeds`: the dealer seeds (default fresh; fixed seeds make a run replayable);
    `dealer_limits`: the most material the dealer makes (as mpcrt.owner_jobs.start_job);
    `owner_network`: the owner's link to each party, declared for "auto" (the dealer runs in
    this process: nothing is simulated)."""
    return run_loop(_run_with_owner(program, owner_program, args, resolve_network(network), timeout, frac_bits,
                                    truncation, comparison, seeds or (prg.new_key(), prg.new_key()), dealer_limits,
                                    resolve_network(owner_network)))


async def _run_with_owner(program: Program, owner_program: Callable[..., Awaitable[Any]], args: tuple,
                          model: NetworkModel | None, timeout: float, frac_bits: int, truncation: str,
                          comparison: str, seeds: tuple[bytes, bytes],
                          dealer_limits: DealerLimits | None, owner_model: NetworkModel | None) -> tuple[Any, Any, Any]:
    settings = PartySettings(timeout, frac_bits, truncation, comparison, model, owner_model)
    ends = pair()
    links = [pair(), pair()]
    dealer = LocalDealer(*seeds, dealer_limits)
    owner_links = [OwnerLink(links[i][0], i, seeds[i], timeout) for i in (0, 1)]
    parties = [settings.party(i, settings.peer_link(i, ends[i]), DealerClient(i, seeds[i], dealer), owner_links[i])
               for i in (0, 1)]
    client = OwnerClient((links[0][1], links[1][1]), seeds[1], frac_bits, timeout)
    client.start()

    async def party_run(i: int) -> Any:
        try:
            result = await parties[i].run(program, *args)
            owner_links[i].finished(parties[i].stats.as_dict())
            return result
        except BaseException as exc:
            owner_links[i].error(f"{type(exc).__name__}: {exc}", type(exc).__name__)
            raise
        finally:
            await owner_links[i].close()

    async def owner_run() -> Any:
        try:
            return await owner_program(client, *args)
        except BaseException:
            await client.close()  # the parties see the owner leave at once, not after their timeout
            raise

    try:
        results = await asyncio.gather(owner_run(), party_run(0), party_run(1), return_exceptions=True)
    finally:
        await client.close()
    failed = [r for r in results[1:] if isinstance(r, BaseException)]
    if isinstance(results[0], BaseException) and (not failed or not isinstance(results[0], ServerFailed)):
        raise results[0]
    r0, r1 = _collect(list(results[1:]))
    return results[0], r0, r1


async def _run_in_one_loop(program: Program, args: tuple, transport: str, options: _LocalRun) -> list:
    if transport == "memory":
        ends: tuple[Transport, Transport] = pair()
    else:
        timeout = options.settings.timeout
        listener = await listen(LOOPBACK, 0, tls=tls_config(0, options.tls), timeout=timeout)
        try:
            accepting = asyncio.ensure_future(listener.accept(timeout))
            end1 = await connect(LOOPBACK, listener.port, tls=tls_config(1, options.tls), timeout=timeout)
            ends = (await accepting, end1)
        finally:
            await listener.close()
    seed0, seed1 = options.seeds
    service = listener = None
    if options.dealer == "local":
        local = LocalDealer(seed0, seed1)
        sources: list[CorrectionSource] = [local, local]
    else:
        service = DealerService(seed0, seed1, link=options.settings.owner_network, workers=options.dealer_workers)
        listener = await listen(LOOPBACK, 0, tls=_dealer_tls(options.tls), timeout=options.settings.timeout)
        serving = asyncio.ensure_future(service.serve(listener))
        sources = [await _connect_dealer(listener.port, i, options.tls, options.settings) for i in (0, 1)]
    parties = [options.settings.party(i, options.settings.peer_link(i, ends[i], options.wrap),
                                      DealerClient(i, (seed0, seed1)[i], sources[i]))
               for i in (0, 1)]
    try:
        return await asyncio.gather(*(p.run(program, *args, plan=options.plan) for p in parties),
                                    return_exceptions=True)
    finally:
        if service is not None and listener is not None:
            for source in sources:
                await source.close()  # type: ignore[attr-defined]
            serving.cancel()
            await service.close()
            await listener.close()


def _dealer_tls(tls: bool, credentials: dict[str, Credentials] | None = None) -> TLSConfig | None:
    """The dealer service (the owner's role) accepts the two parties."""
    return TLSConfig((credentials or local_credentials())["owner"], ("party0", "party1")) if tls else None


async def _connect_dealer(port: int, party_id: int, tls: bool, settings: PartySettings,
                          credentials: dict[str, Credentials] | None = None) -> RemoteDealer:
    creds = credentials or local_credentials()
    config = TLSConfig(creds[f"party{party_id}"], "owner") if tls else None
    conn: Transport = await connect(LOOPBACK, port, tls=config, timeout=settings.timeout)
    return RemoteDealer(settings.dealer_link(conn), party_id, timeout=settings.timeout)


def _collect(results: list) -> tuple[Any, Any]:
    """Both results, or the failure that caused the others (peer errors are consequences)."""
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    if not failures:
        return results[0], results[1]
    causes = [f for f in failures if not isinstance(f[1], PeerAborted | PeerLost)] or failures
    party_id, exc = causes[0]
    exc.party_id = party_id  # type: ignore[attr-defined]
    exc.add_note(f"(raised by party {party_id})")
    for other_id, other in failures:
        if other is not exc:
            exc.add_note(f"party {other_id} saw: {type(other).__name__}: {other}")
    raise exc


# ---- one process per party -------------------------------------------------------------------

def _run_processes(program: Program, args: tuple, options: _LocalRun) -> tuple[Any, Any]:
    try:
        pickle.dumps((program, args, options.wrap))
    except Exception as exc:
        raise TypeError("processes=True sends the program and its arguments to two new processes: "
                        f"define the program (and any wrap) at module level and pass picklable arguments ({exc})"
                        ) from exc
    credentials = local_credentials()
    dealer_thread = _DealerThread(*options.seeds, tls=_dealer_tls(options.tls, credentials),
                                  link=options.settings.owner_network, workers=options.dealer_workers)
    options = replace(options, dealer_port=dealer_thread.port)
    ctx = mp.get_context("spawn")
    port_queue, results_queue = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_party_process, name=f"mpcrt-party{i}", daemon=True,
                         args=(i, program, args, options, credentials, port_queue, results_queue))
             for i in (0, 1)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + options.settings.timeout * 2 + 60.0
        outcomes = _await_outcomes(procs, results_queue, deadline=deadline)
    finally:
        dealer_thread.stop()
    results: list[Any] = [None, None]
    for i in (0, 1):
        ok, payload, trace = outcomes[i]
        if ok:
            results[i] = pickle.loads(payload)
        else:
            exc = pickle.loads(payload) if payload is not None else RuntimeError(trace.splitlines()[-1])
            if trace:
                exc.add_note(f"traceback in party {i}'s process:\n{trace}")
            results[i] = exc
    return _collect(results)


def _await_outcomes(procs: list, results_queue: Any, deadline: float) -> dict[int, tuple]:
    """Each party's (ok, pickled result or exception, traceback); a process that dies is a failure."""
    outcomes: dict[int, tuple] = {}
    dead_since: dict[int, float] = {}
    try:
        while len(outcomes) < 2:
            try:
                party_id, ok, payload, trace = results_queue.get(timeout=0.2)
                outcomes[party_id] = (ok, payload, trace)
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            for i, p in enumerate(procs):
                # a result posted just before exit may still be in the pipe: allow a moment
                if i not in outcomes and p.exitcode is not None and now - dead_since.setdefault(i, now) > 1.0:
                    lost = PeerLost(f"party {i}'s process ended without a result (exit code {p.exitcode})")
                    outcomes[i] = (False, pickle.dumps(lost), "")
            if now > deadline:
                for i in (0, 1):
                    if i not in outcomes:
                        hung = PeerTimeout(f"party {i}'s process gave no result in time; it was killed")
                        outcomes[i] = (False, pickle.dumps(hung), "")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return outcomes


def _party_process(party_id: int, program: Program, args: tuple, options: _LocalRun,
                   credentials: dict[str, Credentials], port_queue: Any, results_queue: Any) -> None:
    torch.set_num_threads(1)
    try:
        result = run_loop(_party_main(party_id, program, args, options, credentials, port_queue))
        results_queue.put((party_id, True, pickle.dumps(result), ""))
    except BaseException as exc:  # reported to the parent, which re-raises it
        try:
            payload = pickle.dumps(exc)
            pickle.loads(payload)
        except Exception:
            payload = None
        results_queue.put((party_id, False, payload, traceback.format_exc()))


async def _party_main(party_id: int, program: Program, args: tuple, options: _LocalRun,
                      credentials: dict[str, Credentials], port_queue: Any) -> Any:
    tls = tls_config(party_id, options.tls, credentials)
    if party_id == 0:
        listener = await listen(LOOPBACK, 0, tls=tls, timeout=options.settings.timeout)
        port_queue.put(listener.port)
        try:
            transport: Transport = await listener.accept(options.settings.timeout + 60.0)
        finally:
            await listener.close()
    else:
        port = await asyncio.get_running_loop().run_in_executor(None, port_queue.get, True, 60.0)
        transport = await connect(LOOPBACK, port, tls=tls, timeout=options.settings.timeout)
    transport = options.settings.peer_link(party_id, transport, options.wrap)
    seed = options.seeds[party_id]
    source = await _connect_dealer(options.dealer_port, party_id, options.tls, options.settings, credentials)
    party = options.settings.party(party_id, transport, DealerClient(party_id, seed, source))
    try:
        return await party.run(program, *args, plan=options.plan)
    finally:
        await source.close()


class _DealerThread:
    """The dealer service on its own event loop in a thread of the parent process."""

    def __init__(self, seed0: bytes, seed1: bytes, tls: TLSConfig | None, link: NetworkModel | None = None,
                 workers: int = 0) -> None:
        self._loop = new_event_loop()
        self._service = DealerService(seed0, seed1, link=link, workers=workers)
        self._listener = self._loop.run_until_complete(listen(LOOPBACK, 0, tls=tls))
        self.port = self._listener.port
        self._thread = threading.Thread(target=self._run, name="mpcrt-dealer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._service.serve(self._listener))
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        # stopped: end the connections and the listener's accepts, so no task is left pending
        self._loop.run_until_complete(self._service.close())
        self._loop.run_until_complete(self._listener.close())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
