"""Transport benchmarks: throughput, round trips, one reveal, and the WAN simulator against its model.

    .venv/bin/python -m bench.transport [--json PATH] [--quick]

Real-socket measurements run the two ends in two spawned OS processes, each pinned to its
own core, on uvloop, over loopback. The ceiling is what uvloop's own TLS streams reach with the
same certificates, so the ratio says how much the framed transport costs on top of TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

import torch
import uvloop

import mpcrt
from mpcrt.local import LOOPBACK, local_credentials, tls_config
from transports import PRESETS, NetworkModel, Transport, WanTransport, connect, listen, pair
from transports.base import Buffer
from transports.certs import Credentials
from transports.loop import run as run_loop

MIB = 1 << 20
TIMEOUT = 60.0
REAL_LINKS = ("tcp", "tls", "raw-tcp", "raw-tls")
STREAM_LIMIT = 4 * MIB  # StreamReader buffer: the default 64 KiB pauses reading many times per frame
WAN_MODELS = (PRESETS["wan"], NetworkModel(100e6, 0.04, name="100 Mbit/s"))
LINK_NAMES = {"memory": "memory pair", "tcp": "tcp plain", "tls": "tcp TLS", "raw-tcp": "raw uvloop tcp (ceiling)",
              "raw-tls": "raw uvloop TLS (ceiling)"}


class Link(Protocol):
    """What a measurement needs from a connection: the transports and raw streams both provide it."""

    def send(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    async def recv(self, size: int) -> Buffer: ...

    async def close(self) -> None: ...


class FrameLink:
    """A project transport (frames carry their own length, so `size` is only the expected one)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.transport.send(data)

    async def drain(self) -> None:
        await self.transport.drain()

    async def recv(self, size: int) -> Buffer:
        return await self.transport.recv(TIMEOUT)

    async def close(self) -> None:
        await self.transport.close()


class StreamLink:
    """The ceiling: asyncio streams with no framing at all (the receiver knows every size)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self, size: int) -> Buffer:
        return await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT)

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass(frozen=True)
class Scenario:
    """One measurement: which link, which simulated network (if any), and which exchange.

    Keys look like "bulk/tls#2": runs of the same measurement share the part before "#".
    """

    key: str
    link: str
    kind: str  # "bulk": `frames` frames then a 1-byte ack; "ping": 1-byte ping-pong
    model: NetworkModel | None = None
    frames: int = 64
    frame_bytes: int = MIB
    drain_each: bool = True
    iterations: int = 1000
    warmup: int = 100


# ---- the exchanges ---------------------------------------------------------------------------

async def bulk_send(link: Link, frames: int, frame_bytes: int, drain_each: bool) -> float:
    """Seconds from the first send to the receiver's ack: the transfer plus one first-frame latency.

    drain_each waits for flow control after every frame, as a streaming sender would; without it
    every frame is queued at once, as the runtime does (it never drains).
    """
    payload = os.urandom(frame_bytes)
    start = time.perf_counter()
    for _ in range(frames):
        link.send(payload)
        if drain_each:
            await link.drain()
    await link.recv(1)
    return time.perf_counter() - start


async def bulk_receive(link: Link, frames: int, frame_bytes: int) -> float:
    """Seconds from the first frame's arrival to the last's: the rate without the propagation delay."""
    await link.recv(frame_bytes)
    first = time.perf_counter()
    for _ in range(frames - 1):
        await link.recv(frame_bytes)
    last = time.perf_counter()
    link.send(b"k")
    await link.drain()
    return last - first


async def ping(link: Link, iterations: int) -> list[float]:
    """Round-trip seconds of 1-byte frames, one after the other."""
    rtts = []
    for _ in range(iterations):
        start = time.perf_counter()
        link.send(b"p")
        await link.recv(1)
        rtts.append(time.perf_counter() - start)
    return rtts


async def pong(link: Link, iterations: int) -> None:
    for _ in range(iterations):
        await link.recv(1)
        link.send(b"p")


async def exchange(scenario: Scenario, link: Link, sender: bool) -> list[float]:
    """This side's part of the scenario after a warm-up; returns its timings (seconds)."""
    s = scenario
    if s.kind == "bulk":
        side = partial(bulk_send, drain_each=s.drain_each) if sender else bulk_receive
        await side(link, max(2, s.frames // 8), s.frame_bytes)  # warm-up: socket buffers, TCP window, allocator
        return [await side(link, s.frames, s.frame_bytes)]
    if sender:
        return (await ping(link, s.warmup + s.iterations))[s.warmup:]
    await pong(link, s.warmup + s.iterations)
    return []


# ---- opening links -----------------------------------------------------------------------------

def _simulated(transport: Transport, model: NetworkModel | None) -> Transport:
    return transport if model is None else WanTransport(transport, model)


async def serve(scenario: Scenario, credentials: dict[str, Credentials], ports: Any) -> Link:
    """Party 0's end: listen on a free port, announce it, accept one peer."""
    tls = tls_config(0, scenario.link.endswith("tls"), credentials)
    if scenario.link.startswith("raw-"):
        accepted: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(lambda r, w: accepted.set_result(StreamLink(r, w)), LOOPBACK, 0,
                                            ssl=tls.context(server_side=True) if tls else None, limit=STREAM_LIMIT)
        ports.put(server.sockets[0].getsockname()[1])
        try:
            return await asyncio.wait_for(accepted, TIMEOUT)
        finally:
            server.close()
    listener = await listen(LOOPBACK, 0, tls=tls, timeout=TIMEOUT)
    ports.put(listener.port)
    try:
        return FrameLink(_simulated(await listener.accept(TIMEOUT), scenario.model))
    finally:
        await listener.close()


async def dial(scenario: Scenario, credentials: dict[str, Credentials], ports: Any) -> Link:
    """Party 1's end: wait for party 0's port, connect."""
    port = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, TIMEOUT)
    tls = tls_config(1, scenario.link.endswith("tls"), credentials)
    if scenario.link.startswith("raw-"):
        context, name = (tls.context(server_side=False), tls.peer_name) if tls else (None, None)
        reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context, server_hostname=name,
                                                       limit=STREAM_LIMIT)
        return StreamLink(reader, writer)
    return FrameLink(_simulated(await connect(LOOPBACK, port, tls=tls, timeout=TIMEOUT), scenario.model))


CUSTOM_NETWORK = re.compile(r"^(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)(?:ms)?$")


def network_spec(name: str) -> str | dict[str, float] | None:
    """A benchmark's --network value as run_local's `network=`: 'loopback' (None: real TLS
    sockets only), a preset ('lan', 'wan', 'mobile'), or a custom simulated link written
    'MBPS/RTT' (e.g. '100/20': 100 Mbit/s, 20 ms round trip)."""
    if name == "loopback":
        return None
    if name in PRESETS:
        return name
    m = CUSTOM_NETWORK.match(name)
    if m is None:
        raise ValueError(f"unknown network {name!r}: loopback, {', '.join(PRESETS)}, or a custom link "
                         "MBPS/RTT such as 100/20 (100 Mbit/s, 20 ms round trip)")
    return {"bandwidth_mbps": float(m.group(1)), "rtt_ms": float(m.group(2))}


def pin_to_core(index: int) -> None:
    """Keep this process on the index-th core it may use, when it may use two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


# ---- running scenarios: (sender's timings, receiver's timings) per key -----------------------------

Timings = dict[str, tuple[list[float], list[float]]]


async def _process_side(role: int, scenario: Scenario, credentials: dict[str, Credentials], ports: Any) -> list:
    link = await (serve if role == 0 else dial)(scenario, credentials, ports)
    try:
        return await exchange(scenario, link, sender=role == 1)
    finally:
        await link.close()


def _worker(role: int, scenarios: Sequence[Scenario], credentials: dict[str, Credentials],
            ports: Any, results: Any) -> None:
    """One spawned process: party 0 receives (and answers pings), party 1 sends.

    Each is pinned to its own core: left to the scheduler, throughput varied several-fold between runs.
    """
    torch.set_num_threads(1)
    pin_to_core(role)
    try:
        timings = {s.key: run_loop(_process_side(role, s, credentials, ports)) for s in scenarios}
        results.put((role, timings, None))
    except BaseException:
        results.put((role, None, traceback.format_exc()))


def run_in_processes(scenarios: Sequence[Scenario]) -> Timings:
    """Both ends in two spawned processes, one connection per scenario."""
    ctx = mp.get_context("spawn")
    ports, results = ctx.Queue(), ctx.Queue()
    credentials = local_credentials()
    procs = [ctx.Process(target=_worker, args=(role, scenarios, credentials, ports, results), daemon=True)
             for role in (0, 1)]
    for p in procs:
        p.start()
    outcomes: dict[int, dict[str, list[float]]] = {}
    try:
        for _ in procs:
            role, timings, error = results.get(timeout=600)
            if error is not None:
                raise RuntimeError(f"benchmark process {role} failed:\n{error}")
            outcomes[role] = timings
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return {s.key: (outcomes[1][s.key], outcomes[0][s.key]) for s in scenarios}


async def _memory_pair(scenario: Scenario) -> tuple[list[float], list[float]]:
    a, b = pair()
    receiver, sender = FrameLink(_simulated(a, scenario.model)), FrameLink(_simulated(b, scenario.model))
    try:
        received, sent = await asyncio.gather(exchange(scenario, receiver, False), exchange(scenario, sender, True))
    finally:
        await asyncio.gather(receiver.close(), sender.close())
    return sent, received


def run_in_process(scenarios: Sequence[Scenario]) -> Timings:
    """Both ends on a memory pair in this process's event loop."""
    return {s.key: run_loop(_memory_pair(s)) for s in scenarios}


def runs(timings: Timings, name: str, side: int = 0) -> list[float]:
    """All timings of the runs of `name` (side 0: sender's, 1: receiver's), in run order."""
    return [t for key, both in timings.items() if key.split("#")[0] == name for t in both[side]]


# ---- one reveal --------------------------------------------------------------------------------

async def reveal_program(party: mpcrt.Party, warmup: int, iterations: int, pin: bool) -> float:
    """Median seconds of one `reveal()` of a 1-element share, revealed again and again.

    pin: each party's process on its own core, like the ping-pong it is compared with.
    """
    if pin:
        pin_to_core(party.id)
    x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
    for _ in range(warmup):
        await x.reveal()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        await x.reveal()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reveal_medians() -> dict[str, float]:
    """Median reveal seconds (the slower party's) over TLS in two processes, and in memory in one."""
    tls = mpcrt.run_local(reveal_program, 50, 200, True, transport="tcp", processes=True)
    memory = mpcrt.run_local(reveal_program, 50, 200, False)
    return {"tls": max(tls), "memory": max(memory)}


# ---- what to run ---------------------------------------------------------------------------------

def wan_frames(model: NetworkModel) -> int:
    """1 MiB frames that keep the simulated link busy for about one second."""
    return round(model.bandwidth_bps / 8 / MIB)


def scenarios(repeats: int) -> tuple[list[Scenario], list[Scenario]]:
    """(in-process, two-process) scenarios of sections a, b and d; repeated runs are interleaved
    so that a burst of load on this machine hits every link, not just one."""
    wan = PRESETS["wan"]
    local: list[Scenario] = [Scenario("ping/memory", "memory", "ping"),
                             Scenario("wan-rtt/memory", "memory", "ping", wan, iterations=50, warmup=3)]
    remote: list[Scenario] = [Scenario(f"ping/{link}", link, "ping") for link in REAL_LINKS]
    remote.append(Scenario("wan-rtt/tls", "tls", "ping", wan, iterations=50, warmup=3))
    for r in range(repeats):
        local.append(Scenario(f"bulk/memory#{r}", "memory", "bulk"))
        remote += [Scenario(f"bulk/{link}#{r}", link, "bulk") for link in REAL_LINKS]
        for model in WAN_MODELS:
            name = f"wan-bulk-{model.bandwidth_bps / 1e6:g}"
            local.append(Scenario(f"{name}/memory#{r}", "memory", "bulk", model, wan_frames(model), drain_each=False))
            remote.append(Scenario(f"{name}/tls#{r}", "tls", "bulk", model, wan_frames(model), drain_each=False))
    local.append(Scenario("wan-bulk-drained/memory", "memory", "bulk", wan, wan_frames(wan)))
    return local, remote


# ---- the report ------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table; `met` is None for rows without a target."""

    section: str
    name: str
    value: float
    unit: str
    target: str = ""
    ratio: float | None = None
    met: bool | None = None


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def throughput_rows(t: Timings) -> list[Row]:
    """MB/s from the sender's start-to-ack times; ratios are medians of back-to-back pairs of runs."""
    rate = {link: [64 * MIB / 1e6 / s for s in runs(t, f"bulk/{link}")] for link in ("memory", *REAL_LINKS)}
    rows = [Row("a throughput", f"64 x 1 MiB, {LINK_NAMES[link]}", statistics.median(r), "MB/s")
            for link, r in rate.items()]
    tls = statistics.median(a / b for a, b in zip(rate["tls"], rate["raw-tls"]))
    tcp = statistics.median(a / b for a, b in zip(rate["tcp"], rate["raw-tcp"]))
    rows.append(Row("a throughput", "tcp TLS / raw TLS ceiling", tls, "x", ">= 0.70", tls, tls >= 0.70))
    rows.append(Row("a throughput", "tcp plain / raw tcp ceiling", tcp, "x"))
    return rows


def rtt_rows(t: Timings) -> list[Row]:
    rows = []
    for link in ("memory", *REAL_LINKS):
        rtts = runs(t, f"ping/{link}")
        name = f"1 B ping-pong, {LINK_NAMES[link]}"
        rows.append(Row("b round trip", f"{name}, median", statistics.median(rtts) * 1e6, "us"))
        rows.append(Row("b round trip", f"{name}, p90", p90(rtts) * 1e6, "us"))
    return rows


def reveal_rows(reveal: dict[str, float], t: Timings) -> list[Row]:
    ratio = reveal["tls"] / statistics.median(runs(t, "ping/raw-tls"))
    return [Row("c reveal", "reveal of 1 element, memory pair, 1 process, median", reveal["memory"] * 1e6, "us"),
            Row("c reveal", "reveal of 1 element, TLS, 2 processes, median", reveal["tls"] * 1e6, "us"),
            Row("c reveal", "reveal / raw TLS ping-pong median", ratio, "x", "<= 2.0", ratio, ratio <= 2.0)]


def wan_rows(t: Timings) -> list[Row]:
    """RTT against the wan preset; goodput from first to last arrival (no propagation delay)."""
    rows = []
    wan = PRESETS["wan"]
    for link in ("memory", "tls"):
        rtt = statistics.median(runs(t, f"wan-rtt/{link}"))
        ratio = rtt / wan.rtt_s
        rows.append(Row("d WAN simulator", f"RTT, wan preset (40 ms) over {LINK_NAMES[link]}", rtt * 1e3, "ms",
                        "ratio 1 +- 5%", ratio, abs(ratio - 1) <= 0.05))
    for model in WAN_MODELS:
        mbps = model.bandwidth_bps / 1e6
        for link in ("memory", "tls"):
            rows.append(_goodput_row(t, f"wan-bulk-{mbps:g}/{link}", model, f"over {LINK_NAMES[link]}", True))
    rows.append(_goodput_row(t, "wan-bulk-drained/memory", wan, "memory pair, drain() after each frame", False))
    return rows


def _goodput_row(t: Timings, name: str, model: NetworkModel, what: str, has_target: bool) -> Row:
    spans = runs(t, name, side=1)
    measured = (wan_frames(model) - 1) * MIB * 8 / statistics.median(spans) / 1e6
    ratio = measured / (model.bandwidth_bps / 1e6)
    return Row("d WAN simulator", f"goodput at {model.bandwidth_bps / 1e6:g} Mbit/s, {what}", measured, "Mbit/s",
               "ratio 1 +- 10%" if has_target else "", ratio, abs(ratio - 1) <= 0.10 if has_target else None)


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table; columns that are empty in every row are left out."""
    header = ("section", "measurement", "value", "unit", "target", "ratio", "result")
    lines = [(r.section, r.name, f"{r.value:#.4g}" if r.value < 1000 else f"{r.value:.0f}", r.unit, r.target,
              "" if r.ratio is None else f"{r.ratio:.4f}", {True: "PASS", False: "FAIL", None: ""}[r.met])
             for r in rows]
    keep = [i for i in range(len(header)) if any(line[i] for line in lines)]
    widths = {i: max(len(line[i]) for line in (header, *lines)) for i in keep}
    rule = "  ".join("-" * widths[i] for i in keep)

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(cells[i].ljust(widths[i]) for i in keep).rstrip()

    return "\n".join([rule, joined(header), rule, *map(joined, lines), rule])


def text_table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int = 2) -> str:
    """A plain-text table: the first `left` columns and the last one left-aligned, the rest right-aligned."""
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left or i == len(cells) - 1 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([rule, joined(header), rule, *map(joined, lines), rule])


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "uvloop": uvloop.__version__,
            "torch": torch.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="one run of each transfer instead of 3")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    started = time.perf_counter()
    local, remote = scenarios(repeats)
    timings = run_in_process(local) | run_in_processes(remote)
    rows = [*throughput_rows(timings), *rtt_rows(timings), *reveal_rows(reveal_medians(), timings),
            *wan_rows(timings)]
    print(format_table(rows))
    print(f"{sum(r.met is True for r in rows)} of {sum(r.met is not None for r in rows)} targets met; "
          f"{time.perf_counter() - started:.0f} s; MB = 10^6 bytes, Mbit = 10^6 bits")
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "repeats": repeats,
                  "rows": [asdict(r) for r in rows]}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
