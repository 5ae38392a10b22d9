"""Non-linear protocols end to end: online time, rounds, bytes, offline cost and error, per comparison method.

    .venv/bin/python -m bench.nonlinear [--json PATH] [--quick] [--network loopback|lan|wan|mobile|MBPS/RTT|both]
        [--methods M,...] [--only NAME,...] [--frac-bits F] [--run-budget-s S] [--max-run-s S] [--max-material-gb G]

Each (workload, comparison method, network) is one `mpcrt.run_local(..., transport="tcp", processes=True,
offline=True)`: two spawned party processes over mutual TLS on loopback (one torch thread each, each
pinned to its own core), the dealer as a TLS service in this process; `--network wan` adds the
simulated 400 Mbit/s, 40 ms RTT link between the parties (`network="wan"`). The offline phase fetches
all dealer material before the program starts, so the timed op (time.perf_counter around one awaited
op, after warm-up ops of the same shape and a 1-element reveal as a barrier) is the online phase
alone. Then the same run again with the dealer on demand (`offline=False`: party 1 asks the dealer's
service, in this process, when the op needs material; party 0 derives its share then): the "end to
end" time, the dealer's making and shipping included, as a job that is not streamed runs an op
(`--online-only` skips it). The barrier lines the parties up only within a one-way delay of the link,
so an op's time is taken from the later party's start to the later party's end, both read from the
machine's monotonic clock.
Before each run, an in-process probe of the op on a small input estimates its time and dealer material:
repeats are cut to fit a time budget, and runs that would take too long or too much memory are skipped
(and reported). Inputs are fresh for every repeat; x is shared by party 0, batch norm's weight, bias and
running statistics by party 1. The comparison methods are those of `mpcrt.ops.policy.METHODS` at run
time, each passed explicitly to the op; a method that fails is reported in the table, not raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import mpcrt
from bench.arith import CRYPTEN, LPGAN, MB, fixed_point, in_party_process
from bench.transport import Row, format_table, machine, network_spec, pin_to_core, text_table
from mpcrt import ops, ring
from mpcrt.ops import policy
from transports import PRESETS, resolve_network

NETWORKS = ("loopback", "wan")
WAN = PRESETS["wan"]  # 400 Mbit/s, 40 ms RTT
TIMEOUT = 300.0  # seconds without a frame from the peer
PROBE_ELEMENTS = 4096  # the in-process probe of each run shrinks the input to about this many elements
SPAWN_S = 3.0  # what a run costs besides its ops: two party processes, imports, TLS handshakes
COST_FACTOR = 2.5  # a run's wall seconds per op / the probe's seconds scaled to the full shape (dry run, material,
# online); measured 0.5-8 on this machine, so estimates are rough: they only cut repeats and skip runaway runs
BN_MOMENTUM, BN_EPS = 0.1, 1e-5
INV_SQRT_CRYPTEN_RANGE = (0.1, 10.0)  # CrypTen's inverse square root was measured on this range
# perf_counter of the two party processes on one clock (Linux: CLOCK_MONOTONIC) allows timing an op from the
# later party's start to the later party's end; otherwise the slower party's median (as bench/arith.py)
SHARED_CLOCK = time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"
REL_FLOOR = 1e-2  # relative errors are taken where |exact| >= 1e-2 (the unit 2^-16 is then <= 0.15% of it)


@dataclass(frozen=True)
class Anchor:
    """What another system measured on this machine (../shared/BENCHMARKS.md).

    For CrypTen: rounds and MB per party, dealer traffic included, as CrypTen counts them; `error` is
    the max error it reported. `note` qualifies the figure (input range, what is left out).
    """

    who: str
    seconds: float
    rounds: int | None = None
    mb: float | None = None
    error: float | None = None
    note: str = ""

    def wan_seconds(self) -> float:
        """CrypTen's time modelled on the wan link: its loopback time + rounds x one-way delay + MB / bandwidth
        (the MB per party taken to cross the link in one direction, both directions in parallel)."""
        assert self.rounds is not None and self.mb is not None
        return self.seconds + self.rounds * WAN.rtt_s / 2 + self.mb * MB * 8 / WAN.bandwidth_bps

    def wan_formula(self) -> str:
        assert self.rounds is not None and self.mb is not None
        return (f"{self.seconds:g} s + {self.rounds} x {WAN.rtt_s / 2 * 1e3:g} ms + {self.mb:g} MB x 8 / "
                f"{WAN.bandwidth_bps / 1e6:g} Mbit/s = {self.wan_seconds():.3f} s")

    def label(self) -> str:
        parts = [f"{self.who}: {self.seconds:g} s"]
        if self.rounds is not None:
            parts.append(f"{self.rounds} rd / {self.mb:g} MB")
        if self.error is not None:
            parts.append(f"err {self.error:g}")
        return " / ".join(parts) + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Targets:
    """Time targets: our online time / CrypTen's (loopback) or CrypTen's modelled wan time (wan), and our
    end-to-end time (dealer on demand) / CrypTen's on loopback (its trusted first party makes its
    triples inside its op time, so its time is already end to end)."""

    loopback: float | None = None
    wan: float | None = None
    end_to_end: float | None = None


@dataclass(frozen=True)
class Workload:
    """One op on inputs of one shape and distribution."""

    name: str
    op: str  # relu, leaky_relu, sigmoid, tanh, reciprocal, inv_sqrt, exp, sigmoid_lpgan, ge0, batch_norm
    shape: tuple[int, ...]
    inputs: tuple[str, float, float] = ("uniform", -10.0, 10.0)  # or ("loguniform", lo, hi) or ("bn", 0, 0)
    anchor: Anchor | None = None
    targets: Targets = Targets()
    heavy: bool = False  # fewer repeats
    relative: bool = False  # also report the max relative error (results of a wide range), where |exact| >= 1e-2
    exponents: tuple[int, int] | None = None  # inv_sqrt: the valid range [2^lo, 2^(hi+1)) declared (default: ops')

    def describe_inputs(self) -> str:
        kind, lo, hi = self.inputs
        return {"uniform": f"uniform [{lo:g}, {hi:g}]", "loguniform": f"log-uniform [{lo:g}, {hi:g}]",
                "bn": "DCGAN-like activations"}[kind]


# CrypTen's ranges of times: the fastest run is the anchor ("use" values of the issue)
WORKLOADS = (
    Workload("relu 1e5", "relu", (100_000,), anchor=Anchor(CRYPTEN, 0.30, 9, 46, note="0.30-0.39 s, 9-10 rd"),
             targets=Targets(loopback=1 / 5, wan=1 / 10, end_to_end=1 / 4)),
    Workload("leaky_relu(0.2) 1e5", "leaky_relu", (100_000,)),
    Workload("sigmoid 1e5", "sigmoid", (100_000,), anchor=Anchor(CRYPTEN, 0.43, 23, 75, 2.7e-3, "0.43-1.0 s"),
             targets=Targets(loopback=1 / 5, end_to_end=1 / 2)),
    Workload("tanh 1e5", "tanh", (100_000,), anchor=Anchor(CRYPTEN, 0.49, 24, 75, 5.4e-3),
             targets=Targets(end_to_end=1 / 2)),
    Workload("reciprocal 1e5", "reciprocal", (100_000,), ("loguniform", 1e-2, 1e3),
             anchor=Anchor(CRYPTEN, 0.88, 39, 110, 1.5e-3), targets=Targets(end_to_end=1 / 2), heavy=True,
             relative=True),
    Workload("inv_sqrt 1e5", "inv_sqrt", (100_000,), ("loguniform", 1e-4, 1e4),
             anchor=Anchor(CRYPTEN, 0.29, 18, 37, 1.6e-2, "on [0.1, 10]"), targets=Targets(end_to_end=1 / 2),
             heavy=True, relative=True),
    Workload("exp 1e5", "exp", (100_000,), ("uniform", -10.0, 10.0), heavy=True, relative=True),
    Workload("sigmoid_lpgan 128x128", "sigmoid_lpgan", (128, 128),
             anchor=Anchor(LPGAN, 0.036, note="plaintext, no network"), heavy=True),
    Workload("relu 169x169 (LP-GAN)", "relu", (169, 169),
             anchor=Anchor(LPGAN, 1.1, note="L=64, plaintext, no network; +3.3 s bit conversion")),
    Workload("sigmoid 128x128 (LP-GAN)", "sigmoid", (128, 128),
             anchor=Anchor(LPGAN, 0.036, note="plaintext, no network")),
    Workload("batch_norm train 1x256x8x8 (LP-GAN)", "batch_norm", (1, 256, 8, 8), ("bn", 0.0, 0.0),
             anchor=Anchor(LPGAN, 0.009, note="plaintext, no network")),
    Workload("is_non_negative 1000", "ge0", (1_000,)),
    Workload("is_non_negative 10000", "ge0", (10_000,)),
    Workload("batch_norm train 64x32x24x24", "batch_norm", (64, 32, 24, 24), ("bn", 0.0, 0.0),
             anchor=Anchor(CRYPTEN, 0.62, 20, 57, note="0.62-0.79 s"),
             targets=Targets(loopback=1 / 3, end_to_end=1 / 2), heavy=True),
)


def repeats_for(workload: Workload, network: str, quick: bool) -> tuple[int, int]:
    """(warm-ups, timed repeats) before any cut to the time budget. In a fresh process the first heavy op ran
    2-4x slower than the later ones and the second up to 2x, so two warm-ups everywhere on loopback. On wan
    the first op's extra cost is small against the link's latency and repeats varied by a few percent only,
    so fewer."""
    if network != "loopback":
        return (1, 1) if quick or workload.heavy else (1, 2)
    if quick:
        return (1, 1) if workload.heavy else (2, 2)
    return (2, 2) if workload.heavy else (2, 5)


# ---- inputs and the plaintext reference ---------------------------------------------------------------

def inputs(workload: Workload, seed: int) -> dict[str, torch.Tensor]:
    """Fresh float64 inputs of one repeat: x (party 0's), and for batch norm weight, bias and running
    statistics (party 1's)."""
    g = torch.Generator().manual_seed(seed)
    kind, lo, hi = workload.inputs
    shape = workload.shape
    if kind == "uniform":
        return {"x": lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)}
    if kind == "loguniform":
        exponent = math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(shape, generator=g, dtype=torch.float64)
        return {"x": exponent.exp()}
    # batch norm: per-channel spreads from 0.1 to 10 and per-channel means, as in tests/mpcrt/ops/test_batchnorm.py
    c = shape[1]
    spread = torch.logspace(-1, 1, c, dtype=torch.float64).reshape(1, c, *(1,) * (len(shape) - 2))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * spread + torch.randn(spread.shape, generator=g,
                                                                                     dtype=torch.float64)
    return {"x": x, "weight": 1 + 0.2 * torch.randn(c, generator=g, dtype=torch.float64),
            "bias": 0.1 * torch.randn(c, generator=g, dtype=torch.float64),
            "running_mean": torch.zeros(c, dtype=torch.float64), "running_var": torch.ones(c, dtype=torch.float64)}


def reference(workload: Workload, data: dict[str, torch.Tensor],
              frac_bits: int = ring.DEFAULT_FRAC_BITS) -> torch.Tensor:
    """torch float64 on the fixed-point-rounded inputs (what the parties hold)."""
    held = {k: fixed_point(v, frac_bits) for k, v in data.items()}
    x = held["x"]
    if workload.op == "batch_norm":
        return F.batch_norm(x, held["running_mean"], held["running_var"], held["weight"], held["bias"], training=True,
                            momentum=BN_MOMENTUM, eps=BN_EPS)
    return {"relu": torch.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "sigmoid": torch.sigmoid,
            "sigmoid_lpgan": torch.sigmoid, "tanh": torch.tanh, "reciprocal": torch.reciprocal,
            "inv_sqrt": torch.rsqrt, "exp": torch.exp, "ge0": lambda t: (t >= 0).double()}[workload.op](x)


OWNERS = {"x": 0, "weight": 1, "bias": 1, "running_mean": 1, "running_var": 1}


async def secure_op(workload: Workload, method: str, s: dict[str, Any]) -> Any:
    """The op on shares, the comparison method passed explicitly; returns the output share."""
    x, op = s["x"], workload.op
    if op == "relu":
        return await ops.relu(x, method)
    if op == "leaky_relu":
        return await ops.leaky_relu(x, 0.2, method)
    if op == "ge0":
        return await ops.is_non_negative(x, method)
    if op == "batch_norm":
        return await ops.batch_norm(x, s["running_mean"], s["running_var"], s["weight"], s["bias"], training=True,
                                    momentum=BN_MOMENTUM, eps=BN_EPS, method=method)
    if op == "inv_sqrt" and workload.exponents is not None:
        return await ops.inv_sqrt(x, method, exponents=workload.exponents)
    return await getattr(ops, op)(x, method)  # sigmoid, tanh, reciprocal, inv_sqrt, exp, sigmoid_lpgan


# ---- the program both parties run --------------------------------------------------------------------

async def op_program(party: mpcrt.Party, workload: Workload, method: str, warmup: int, repeats: int,
                     seed: int) -> dict[str, Any]:
    """`warmup` + `repeats` ops, each timed alone; returns this party's timings, counts and (party 0) errors."""
    if in_party_process():
        pin_to_core(party.id)
    barrier = await party.input(torch.zeros(1) if party.id == 0 else None, src=0)
    warmup_times, times, spans, rounds, sent, received = [], [], [], [], [], []
    abs_errors, rel_errors, crypten_range_errors = [], [], []
    for i in range(warmup + repeats):  # the first `warmup` are left out of the medians
        data = inputs(workload, seed + i)
        shared = {}
        for name, value in data.items():
            owner = OWNERS[name]
            shared[name] = await party.input(value if party.id == owner else None, src=owner)
        await barrier.reveal()  # both parties start the op within half a round trip
        s = party.stats
        before = (s.rounds, s.bytes_sent, s.bytes_received)
        start = time.perf_counter()
        out = await secure_op(workload, method, shared)
        elapsed = time.perf_counter() - start
        if i < warmup:
            warmup_times.append(elapsed)
        else:
            times.append(elapsed)
            spans.append((start, start + elapsed))
            rounds.append(s.rounds - before[0])
            sent.append(s.bytes_sent - before[1])
            received.append(s.bytes_received - before[2])
        got = await out.reveal()
        if party.id == 0:
            want = reference(workload, data, party.frac_bits)
            diff = (got.double() - want).abs()
            abs_errors.append(float(diff.max()))
            if workload.relative:  # where the fixed-point unit is at most 0.15% of the exact value
                big = want.abs() >= REL_FLOOR
                rel_errors.append(float((diff[big] / want.abs()[big]).max()))
            if workload.op == "inv_sqrt":
                held = fixed_point(data["x"], party.frac_bits)
                inside = (held >= INV_SQRT_CRYPTEN_RANGE[0]) & (held <= INV_SQRT_CRYPTEN_RANGE[1])
                crypten_range_errors.append(float(diff[inside].max()))
    return {"warmup_times": warmup_times, "times": times, "spans": spans, "rounds": rounds, "bytes_sent": sent,
            "bytes_received": received, "ops": warmup + repeats, "offline": party.stats.offline.as_dict(),
            "frac_bits": party.frac_bits,
            "max_abs_error": max(abs_errors) if abs_errors else None,
            "max_rel_error": max(rel_errors) if rel_errors else None,
            "max_abs_error_crypten_range": max(crypten_range_errors) if crypten_range_errors else None}


# ---- measuring ----------------------------------------------------------------------------------------

@dataclass
class Result:
    """One (workload, method, network); bytes and offline cost are per op and per party."""

    workload: str
    method: str
    network: str
    error: str | None = None  # why the run failed; the figures below are then empty
    skipped: str | None = None  # why the run was not made (estimated too long or too large)
    online_s: float = math.nan  # median of the makespans (later start to later end), else the slower party's median
    online_s_by_party: tuple[float, float] = (math.nan, math.nan)
    end_to_end_s: float = math.nan  # the same, the dealer on demand: making and shipping material included
    rounds: int = 0  # the most any party counted in any repeat
    rounds_min: int = 0  # frames: concurrent chains may or may not share a frame, so this can vary
    bytes_sent: int = 0  # the larger party's (the two send the same for every op measured so far)
    bytes_received: int = 0
    offline_bytes: tuple[float, float] = (0.0, 0.0)  # received from the dealer, party 0 and party 1
    offline_s: tuple[float, float] = (0.0, 0.0)  # making or fetching material, party 0 and party 1
    max_abs_error: float = math.nan
    max_rel_error: float | None = None
    max_abs_error_crypten_range: float | None = None
    warmup: int = 0
    repeats: int = 0
    wall_s: float = 0.0  # the whole run_local: dry run, spawning, offline phase, all ops
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    def total_bytes(self) -> float:
        """Per party, the larger: online bytes sent + offline bytes received from the dealer (party 1's
        for every method where party 0 derives all its material from its seed)."""
        return self.bytes_sent + max(self.offline_bytes)


@dataclass(frozen=True)
class Limits:
    """How long and how large one run may get. Repeats are cut (not below 1 warm-up + 1 timed op) until the
    estimate fits `budget_s`; a run whose minimal form (1 + 1, else a single op with no warm-up) is still
    estimated over `max_run_s`, or over `max_material` bytes of dealer material per party, is skipped and
    reported. The material limit is the dealer's: it answers a party's whole prefetch as one frame, and
    frames stop at 2^30 bytes (transports.base.DEFAULT_MAX_FRAME_BYTES); a larger prefetch fails with
    "lost the connection to the dealer". (The material of a run is also held in memory at once.)"""

    budget_s: float = 25.0
    max_run_s: float = 40.0
    max_material: float = 1.0e9


@dataclass
class Estimate:
    """From the in-process probes, extrapolated to the full shape: per op."""

    op_s: float  # wall seconds one op adds to a run
    material: float  # bytes of dealer material, the party that receives more
    rounds: int
    bytes_sent: float
    probe_shapes: tuple[tuple[int, ...], ...]
    probe_s: tuple[float, ...]


def probe_shapes(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes with the leading dimension cut to about 64 and about PROBE_ELEMENTS elements (batch norm keeps
    its channels, so its per-channel part stays whole), two different ones where the shape allows."""
    rest, lead = math.prod(shape[1:]), shape[0]
    tiny = max(1, min(lead, 64 // rest))
    small = max(1, min(lead, PROBE_ELEMENTS // rest))
    if small == tiny and lead > tiny:
        small = tiny + 1
    return (tiny, *shape[1:]), (small, *shape[1:])


def _probe_once(workload: Workload, method: str, shape: tuple[int, ...], frac_bits: int = ring.DEFAULT_FRAC_BITS
                ) -> tuple[float, dict, dict]:
    small = dataclasses.replace(workload, shape=shape)
    start = time.perf_counter()
    r0, r1 = mpcrt.run_local(op_program, small, method, 0, 1, 0, timeout=TIMEOUT, frac_bits=frac_bits)
    return time.perf_counter() - start, r0, r1


def _linear(n: int, points: Sequence[tuple[int, float]]) -> float:
    """Through the last two points, extrapolated to n (slope at least 0); proportional through one."""
    (n1, y1), (n2, y2) = points[-2:] if len(points) > 1 else ((0, 0.0), points[0])
    return y2 + max(0.0, (y2 - y1) / (n2 - n1)) * (n - n2) if n2 > n1 else y2 * n / n2


def probe(workload: Workload, method: str, network: str, limits: Limits,
          frac_bits: int = ring.DEFAULT_FRAC_BITS) -> Estimate:
    """One op on a tiny input (twice: the first call of an op's code paths costs more than its elements), then,
    unless the tiny one's dealer material, scaled to the full shape, already rules the run out, one on about
    PROBE_ELEMENTS elements: both parties in this process (memory transport, dealer in process). Time, material
    and bytes are extrapolated linearly through the two timed probes."""
    n = math.prod(workload.shape)
    shapes = probe_shapes(workload.shape)
    _probe_once(workload, method, shapes[0], frac_bits)
    times, material, sent = [], [], []
    for shape in dict.fromkeys(shapes):
        seconds, r0, r1 = _probe_once(workload, method, shape, frac_bits)
        size = math.prod(shape)
        times.append((size, seconds))
        material.append((size, float(max(r0["offline"]["bytes_received"], r1["offline"]["bytes_received"]))))
        sent.append((size, float(max(r0["bytes_sent"] + r1["bytes_sent"]))))
        if material[-1][1] * n / size > limits.max_material:  # bytes are linear in the elements: no need to go on
            break
    rounds = max(r0["rounds"] + r1["rounds"])
    op_s = _linear(n, times) * COST_FACTOR
    bytes_sent = _linear(n, sent)
    model = resolve_network(network_spec(network))
    if model is not None:
        op_s += rounds * model.rtt_s / 2 + bytes_sent * 8 / model.bandwidth_bps
    return Estimate(op_s, _linear(n, material), rounds, bytes_sent, tuple(dict.fromkeys(shapes)),
                    tuple(t for _, t in times))


def plan(default: tuple[int, int], est: Estimate, limits: Limits) -> tuple[int, int, str | None]:
    """(warm-ups, timed repeats, why the run is skipped or None)."""
    def wall(w: int, r: int) -> float:
        return SPAWN_S + (w + r) * est.op_s

    def fits(w: int, r: int, seconds: float) -> bool:
        return wall(w, r) <= seconds and (w + r) * est.material <= limits.max_material

    warm, reps = default
    while not fits(warm, reps, limits.budget_s) and reps > 1:
        reps -= 1
    while not fits(warm, reps, limits.budget_s) and warm > 1:
        warm -= 1
    if not fits(warm, reps, limits.max_run_s):
        warm = 0
    if not fits(warm, reps, limits.max_run_s):
        why = []
        if est.material > limits.max_material:
            why.append(f"{est.material / 1e9:.2f} GB of dealer material per op and party > "
                       f"{limits.max_material / 1e9:g} GB per run (one-frame dealer prefetch: <= 2^30 B)")
        if wall(warm, reps) > limits.max_run_s:
            rough = " (from the 64-element probe alone: rough)" if len(est.probe_s) == 1 else ""
            why.append(f"estimated {wall(warm, reps):.0f} s for one op{rough} > {limits.max_run_s:g} s (--max-run-s)")
        return 0, 0, "skipped: " + "; ".join(why)
    return warm, reps, None


def _makespan(r0: dict[str, Any], r1: dict[str, Any]) -> tuple[float, list[float] | None]:
    """The op's time from both parties' records: the median makespan (the later start to the later end)
    where the clock is shared, else the slower party's median; and the makespans."""
    if not SHARED_CLOCK:
        return max(statistics.median(r0["times"]), statistics.median(r1["times"])), None
    makespans = [max(a[1], b[1]) - max(a[0], b[0]) for a, b in zip(r0["spans"], r1["spans"], strict=True)]
    return statistics.median(makespans), makespans


def measure(workload: Workload, method: str, network: str, quick: bool, limits: Limits, seed: int = 1,
            frac_bits: int = ring.DEFAULT_FRAC_BITS, end_to_end: bool = True) -> Result:
    default = repeats_for(workload, network, quick)
    result = Result(workload.name, method, network)
    started = time.perf_counter()
    try:
        est = probe(workload, method, network, limits, frac_bits)
        if plan(default, est, limits)[:2] != default:  # a cut: probe again (a probe took 15x its usual time once)
            est = min(est, probe(workload, method, network, limits, frac_bits), key=lambda e: e.op_s)
        warmup, repeats, skipped = plan(default, est, limits)
        result.extra["estimate"] = asdict(est)
        result.warmup, result.repeats, result.skipped = warmup, repeats, skipped
        if skipped:
            return result
        if (warmup, repeats) != default:
            result.notes.append(f"repeats cut from {default[0]}+{default[1]} to fit the time budget")
        r0, r1 = _run(workload, method, network, warmup, repeats, seed, frac_bits, offline=True)
    except Exception as exc:  # a method that fails is reported, not raised
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        result.extra["traceback"] = traceback.format_exc()
        return result
    finally:
        result.wall_s = time.perf_counter() - started
    result.extra["frac_bits"] = r0["frac_bits"]
    counts = {(a, b, c) for r in (r0, r1) for a, b, c in zip(r["rounds"], r["bytes_sent"], r["bytes_received"])}
    result.rounds_min = min(c[0] for c in counts)
    result.rounds = max(c[0] for c in counts)
    result.bytes_sent = max(c[1] for c in counts)
    result.bytes_received = max(c[2] for c in counts)
    if len({c[1:] for c in counts}) != 1:
        result.notes.append(f"bytes differ between repeats or parties: {sorted({c[1:] for c in counts})}")
    result.online_s_by_party = (statistics.median(r0["times"]), statistics.median(r1["times"]))
    result.online_s, makespans = _makespan(r0, r1)  # a party that started first only waited
    if makespans is not None:
        result.extra["makespans"] = makespans
    if end_to_end:
        _measure_end_to_end(result, workload, method, network, warmup, repeats, seed, frac_bits)
    n = r1["ops"]
    result.offline_bytes = (r0["offline"]["bytes_received"] / n, r1["offline"]["bytes_received"] / n)
    result.offline_s = (r0["offline"]["seconds"] / n, r1["offline"]["seconds"] / n)
    result.max_abs_error = r0["max_abs_error"]
    result.max_rel_error = r0["max_rel_error"]
    result.max_abs_error_crypten_range = r0["max_abs_error_crypten_range"]
    if warmup == 0:
        result.notes.append("no warm-up: the only op ran first in a fresh process (slower)")
    result.extra.update({"times_party0": r0["times"], "times_party1": r1["times"],
                         "warmup_times_party0": r0["warmup_times"], "warmup_times_party1": r1["warmup_times"],
                         "rounds_party0": r0["rounds"], "rounds_party1": r1["rounds"],
                         "offline_party0": r0["offline"], "offline_party1": r1["offline"]})
    return result


def _run(workload: Workload, method: str, network: str, warmup: int, repeats: int, seed: int, frac_bits: int,
         offline: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both parties' records of the ops, the material fetched first (offline) or on demand."""
    return mpcrt.run_local(op_program, workload, method, warmup, repeats, seed, transport="tcp", processes=True,
                           offline=offline, timeout=TIMEOUT, network=network_spec(network), frac_bits=frac_bits)


def _measure_end_to_end(result: Result, workload: Workload, method: str, network: str, warmup: int, repeats: int,
                        seed: int, frac_bits: int) -> None:
    """The same ops with the dealer on demand (its service in this process): result.end_to_end_s."""
    started = time.perf_counter()
    try:
        e0, e1 = _run(workload, method, network, warmup, repeats, seed, frac_bits, offline=False)
    except Exception as exc:  # reported, not raised: the online figures stand
        result.notes.append(f"end to end failed: {type(exc).__name__}: {exc}".splitlines()[0][:200])
        return
    finally:
        result.wall_s += time.perf_counter() - started
    result.end_to_end_s, makespans = _makespan(e0, e1)
    result.extra["end_to_end_makespans"] = makespans
    result.extra["end_to_end_offline"] = (e0["offline"], e1["offline"])


# ---- the report ---------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _ms_or_blank(seconds: float) -> str:
    return "" if math.isnan(seconds) else _ms(seconds)


def _rounds(r: Result) -> str:
    return str(r.rounds) if r.rounds == r.rounds_min else f"{r.rounds_min}-{r.rounds}"


def _err(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2e}"


def best_methods(results: Sequence[Result]) -> dict[tuple[str, str], Result]:
    """The fastest method of each (workload, network) among those that ran."""
    best: dict[tuple[str, str], Result] = {}
    for r in results:
        key = (r.workload, r.network)
        if r.ok and (key not in best or r.online_s < best[key].online_s):
            best[key] = r
    return best


def measurement_table(results: Sequence[Result], network: str) -> str:
    header = ("workload", "method", "online ms", "end to end ms", "rounds", "online MB sent", "online MB recv",
              "offline MB (p1)", "offline MB (p0)", "offline ms (p1)", "max abs err", "max rel err", "reps",
              "anchor / note")
    best = best_methods(results)
    anchors = {w.name: w.anchor for w in WORKLOADS}
    lines = []
    for r in results:
        if r.network != network:
            continue
        if not r.ok:
            lines.append((r.workload, r.method, "SKIPPED" if r.skipped else "FAILED", *[""] * 10,
                          r.skipped or r.error or ""))
            continue
        a = anchors.get(r.workload)
        note = [a.label()] if a is not None else []
        if r.max_abs_error_crypten_range is not None:
            note.append(f"max abs err on [0.1, 10]: {r.max_abs_error_crypten_range:.2e}")
        note += r.notes
        star = "*" if best.get((r.workload, r.network)) is r else ""
        lines.append((r.workload, r.method + star, _ms(r.online_s), _ms_or_blank(r.end_to_end_s), _rounds(r),
                      f"{r.bytes_sent / MB:.2f}",
                      f"{r.bytes_received / MB:.2f}", f"{r.offline_bytes[1] / MB:.2f}",
                      f"{r.offline_bytes[0] / MB:.2f}",
                      _ms(r.offline_s[1]), _err(r.max_abs_error), _err(r.max_rel_error), f"{r.warmup}+{r.repeats}",
                      "; ".join(note)))
    return text_table(header, lines)


def best_table(results: Sequence[Result], networks: Sequence[str]) -> str:
    best = best_methods(results)
    header = ("workload", *(f"best on {n} (online ms)" for n in networks))
    lines = []
    for w in WORKLOADS:
        cells = []
        for n in networks:
            r = best.get((w.name, n))
            cells.append("" if r is None else f"{r.method} ({_ms(r.online_s)})")
        if any(cells):
            lines.append((w.name, *cells))
    return text_table(header, lines, left=len(header))


def time_target_rows(results: Sequence[Result], networks: Sequence[str]) -> list[Row]:
    """Online time of the best method against CrypTen's time (loopback) or its modelled wan time (wan)."""
    best = best_methods(results)
    rows = []
    for w in WORKLOADS:
        a = w.anchor
        if a is None:
            continue
        for n in networks:
            r = best.get((w.name, n))
            if r is None:
                continue
            if a.who != CRYPTEN:
                what = f"{n}, best ({r.method}): online time / {a.who} {_ms(a.seconds)} ms (no target)"
                rows.append(Row(w.name, what, r.online_s * 1e3, "ms", "", r.online_s / a.seconds))
                continue
            if n not in NETWORKS:  # CrypTen's times: measured on loopback, modelled for wan only
                continue
            limit = w.targets.loopback if n == "loopback" else w.targets.wan
            theirs = a.seconds if n == "loopback" else a.wan_seconds()
            what = f"CrypTen {a.seconds:g} s" if n == "loopback" else f"CrypTen modelled wan {theirs:.3f} s"
            ratio = r.online_s / theirs
            target = "" if limit is None else f"<= 1/{round(1 / limit)}"
            rows.append(Row(w.name, f"{n}, best ({r.method}): online time / {what}" + ("" if limit else " (no target)"),
                            r.online_s * 1e3, "ms", target, ratio, None if limit is None else ratio <= limit))
            if n == "loopback" and not math.isnan(r.end_to_end_s):
                limit = w.targets.end_to_end
                ratio = r.end_to_end_s / a.seconds
                what = f"{n}, best ({r.method}): end to end, dealer on demand / CrypTen {a.seconds:g} s"
                rows.append(Row(w.name, what + ("" if limit else " (no target)"), r.end_to_end_s * 1e3, "ms",
                                "" if limit is None else f"<= 1/{round(1 / limit)}", ratio,
                                None if limit is None else ratio <= limit))
    return rows


def cost_target_lines(results: Sequence[Result]) -> tuple[list[tuple[str, ...]], int, int]:
    """Rounds and bytes against CrypTen's, per op and method (both are properties of the protocol, the same on
    every network; taken from the loopback run, or the wan run where loopback was not measured)."""
    by_key: dict[tuple[str, str], Result] = {}
    for r in results:
        if r.ok and ((r.workload, r.method) not in by_key or r.network == "loopback"):
            by_key[(r.workload, r.method)] = r
    lines, met, total = [], 0, 0
    for w in WORKLOADS:
        a = w.anchor
        if a is None or a.who != CRYPTEN:
            continue
        for (name, method), r in by_key.items():
            if name != w.name:
                continue
            assert a.rounds is not None and a.mb is not None
            rounds_ok = r.rounds < a.rounds
            ours = r.total_bytes() / MB
            bytes_ok = ours < a.mb
            both = (r.bytes_sent + r.bytes_received) / MB
            met += rounds_ok + bytes_ok
            total += 2
            lines.append((w.name, method, f"{_rounds(r)} / {a.rounds}", f"{r.rounds / a.rounds:.2f}",
                          "PASS" if rounds_ok else "FAIL", f"{ours:.1f} / {a.mb:g}", f"{ours / a.mb:.2f}",
                          "PASS" if bytes_ok else "FAIL", f"{both:.1f}", f"{both / a.mb:.2f}"))
    return lines, met, total


def cost_table(lines: Sequence[Sequence[str]]) -> str:
    header = ("workload", "method", "rounds ours / CrypTen", "ratio", "< 1", "MB ours (sent + offline) / CrypTen",
              "ratio", "< 1", "MB online sent + recv", "ratio (no target)")
    return text_table(header, lines)


def git_state() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nonlinear", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer warm-ups and repeats (1-2 of each)")
    parser.add_argument("--network", default="loopback",
                        help="loopback TLS, a simulated link on top of it (lan, wan, mobile, or a custom MBPS/RTT "
                             "such as 100/20), comma-separated, or both (loopback,wan)")
    parser.add_argument("--methods", help="comma-separated comparison methods (default: all of "
                                          "mpcrt.ops.policy.METHODS)")
    parser.add_argument("--only", help="comma-separated substrings: run only the workloads whose name contains one")
    parser.add_argument("--run-budget-s", type=float, default=Limits.budget_s,
                        help="cut repeats of a run estimated longer than this (default %(default)g)")
    parser.add_argument("--max-run-s", type=float, default=Limits.max_run_s,
                        help="skip a run estimated longer than this even when cut to one op (default %(default)g)")
    parser.add_argument("--max-material-gb", type=float, default=Limits.max_material / 1e9,
                        help="cut, then skip, runs whose dealer material per party exceeds this; above 1.07 the "
                             "dealer's prefetch fails (default %(default)g)")
    parser.add_argument("--frac-bits", type=int, default=16, help="fixed-point fractional bits (default %(default)s)")
    parser.add_argument("--online-only", action="store_true",
                        help="skip the second run of each op with the dealer on demand (end to end)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    limits = Limits(args.run_budget_s, args.max_run_s, args.max_material_gb * 1e9)
    methods = tuple(args.methods.split(",")) if args.methods else tuple(policy.METHODS)
    networks = NETWORKS if args.network == "both" else tuple(args.network.split(","))
    for network in networks:
        try:
            network_spec(network)
        except ValueError as exc:
            parser.error(str(exc))
    workloads = [w for w in WORKLOADS if not args.only or any(s in w.name for s in args.only.split(","))]
    started, git_at_start = time.perf_counter(), git_state()
    results = []
    for network in networks:
        for w in workloads:
            for method in methods:
                r = measure(w, method, network, args.quick, limits, frac_bits=args.frac_bits,
                            end_to_end=not args.online_only)
                results.append(r)
                status = (f"{_ms(r.online_s)} ms ({_ms_or_blank(r.end_to_end_s)} end to end), {_rounds(r)} rd, "
                          f"{r.warmup}+{r.repeats}" if r.ok else
                          r.skipped or f"FAILED ({r.error})")
                est = r.extra.get("estimate")
                guess = "" if est is None or not r.repeats else \
                    f", estimated {SPAWN_S + (r.warmup + r.repeats) * est['op_s']:.0f} s"
                print(f"  {network:8} {w.name:36} {method:6} {status}  [{r.wall_s:.0f} s{guess}]", file=sys.stderr,
                      flush=True)
    for network in networks:
        model = resolve_network(network_spec(network))
        print(f"\n{network}" + (f" (simulated {model.bandwidth_bps / 1e6:g} Mbit/s, {model.rtt_s * 1e3:g} ms RTT)"
                                if model is not None else " (TLS, two processes)"))
        print(measurement_table(results, network))
    timing = ("from the later party's start to the later party's end (one clock)" if SHARED_CLOCK else
              "the slower party's")
    print(f"online: median of the timed repeats (reps = warm-ups + timed), {timing}; * = the fastest method; "
          "bytes and offline cost per op and party; MB = 10^6 bytes; errors against torch float64 on the "
          f"fixed-point-rounded inputs; relative: |error| / |exact| where |exact| >= {REL_FLOOR:g}")
    print("\nbest method (lowest online time) per workload and network")
    print(best_table(results, networks))
    rows = time_target_rows(results, networks)
    if rows:
        print("\ntime against the anchors (best method per network)")
        print(format_table(rows))
    if "wan" in networks:
        for w in WORKLOADS:
            if w.anchor is not None and w.anchor.who == CRYPTEN and any(r.workload == w.name for r in results):
                print(f"CrypTen modelled wan time, {w.name}: {w.anchor.wan_formula()}")
    lines, cost_met, cost_total = cost_target_lines(results)
    if lines:
        print("\nrounds and bytes per party against CrypTen's (target: below, for every op; ours = online bytes sent "
              "+ offline bytes received from the dealer, of the party that receives more, i.e. party 1)")
        print(cost_table(lines))
    time_met = sum(r.met is True for r in rows)
    time_total = sum(r.met is not None for r in rows)
    failed = [f"{r.workload} / {r.method} / {r.network}" for r in results if r.error]
    git_at_end = git_state()
    skipped = [f"{r.workload} / {r.method} / {r.network}" for r in results if r.skipped]
    print(f"\ntime targets met: {time_met} of {time_total}; rounds and bytes targets met: {cost_met} of {cost_total}; "
          f"{len(failed)} runs failed{': ' + ', '.join(failed) if failed else ''}; "
          f"{len(skipped)} skipped{': ' + ', '.join(skipped) if skipped else ''}; "
          f"{time.perf_counter() - started:.0f} s; git {git_at_start}"
          + ("" if git_at_end == git_at_start else f" at the start, {git_at_end} at the end: code changed meanwhile"))
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "git": [git_at_start, git_at_end], "machine": machine(),
                  "methods": methods, "networks": networks, "quick": args.quick, "limits": asdict(limits),
                  "frac_bits": args.frac_bits,
                  "argv": sys.argv[1:],
                  "results": [asdict(r) for r in results],
                  "time_rows": [asdict(r) for r in rows],
                  "cost_rows": [dict(zip(("workload", "method", "rounds", "rounds_ratio", "rounds_result", "mb",
                                          "mb_ratio", "mb_result", "mb_sent_received", "mb_sent_received_ratio"), line))
                                for line in lines],
                  "wan_model": {w.name: w.anchor.wan_formula() for w in WORKLOADS
                                if w.anchor is not None and w.anchor.who == CRYPTEN}}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
