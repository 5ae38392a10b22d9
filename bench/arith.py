"""Beaver products end to end: online time, rounds, bytes, offline cost and error, against CrypTen.

    .venv/bin/python -m bench.arith [--json PATH] [--quick] [--stress N] [--frac-bits F]

Each workload is one `mpcrt.run_local(..., transport="tcp", processes=True, offline=True)`:
two spawned party processes over mutual TLS on loopback (one torch thread each, each pinned
to its own core), the dealer as a TLS service in this process. The offline phase fetches all
dealer material before the program starts, so the timed op (time.perf_counter around one
awaited product, after WARMUP products of the same shape and a 1-element reveal as a
barrier) is the online phase alone; a second run with the dealer on demand (`offline=False`: its
service asked when a product needs material) gives the end-to-end time, the dealer's work
included (`--online-only` skips it). x is shared by party 0, the weight (y) by party 1;
every repeat shares fresh inputs. The plaintext baseline is the same torch op on float32
tensors in this process, one thread. `--stress N` multiplies N pairs of shares of mixed
magnitudes in chunks of 10^6 (one process, memory transport) and reports the worst error.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import mpcrt
from bench.transport import Row, format_table, machine, pin_to_core
from mpcrt import ops, ring

WARMUP = 2  # untimed products first: in a fresh process the first ran 2-13x slower, the second up to 5x
ULP = 2.0 ** -16  # the fixed-point unit at the default frac_bits
MB = 1e6
STRESS_CHUNK = 1_000_000
STRESS_SCALES = (1e-3, 1.0, 100.0, 3e4)
# |x*y| must stay below 2^30 (the product is at scale 2^32 and truncation is exact below 2^62), so pairs
# of scales with a larger product than this are left out: of the 16 pairs, only (3e4, 3e4)
STRESS_MAX_SCALE_PRODUCT = 3e6


@dataclass(frozen=True)
class Anchor:
    """What another system measured on this machine (../shared/BENCHMARKS.md)."""

    who: str
    seconds: float
    rounds: int | None = None
    mb: float | None = None  # per party, dealer traffic included, as that system counts it


@dataclass(frozen=True)
class Workload:
    """One product: op(x, y, **kwargs) with x from party 0 and y from party 1."""

    name: str
    op: str  # mul, matmul, linear, conv2d, conv_transpose2d
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()
    anchor: Anchor | None = None
    conv: bool = False  # target: within 4x of plaintext float32 torch

    def plaintext(self) -> Callable[..., torch.Tensor]:
        return {"mul": torch.mul, "matmul": torch.matmul, "linear": F.linear, "conv2d": F.conv2d,
                "conv_transpose2d": F.conv_transpose2d}[self.op]

    def secure(self) -> Callable[..., Any]:
        return getattr(ops, self.op)


CRYPTEN = "CrypTen 0.4.1"
LPGAN = "LP-GAN prototype (numpy)"
WORKLOADS = (
    Workload("mul 1e5", "mul", (100_000,), (100_000,), anchor=Anchor(CRYPTEN, 0.015, 2, 3.2)),
    Workload("matmul 256x256 @ 256x256", "matmul", (256, 256), (256, 256)),
    Workload("conv2d 64x1x28x28 * 32x1x5x5", "conv2d", (64, 1, 28, 28), (32, 1, 5, 5),
             anchor=Anchor(CRYPTEN, 0.12, 1, 0.8), conv=True),
    Workload("conv2d b16 3->64 64x64 k4 s2 p1", "conv2d", (16, 3, 64, 64), (64, 3, 4, 4),
             (("padding", 1), ("stride", 2)), anchor=Anchor(CRYPTEN, 0.081, 2, 3.2), conv=True),
    Workload("conv_transpose2d b16 128->64 8->16 k4 s2 p1", "conv_transpose2d", (16, 128, 8, 8), (128, 64, 4, 4),
             (("padding", 1), ("stride", 2)), anchor=Anchor(CRYPTEN, 0.17, 2, 4.2), conv=True),
    Workload("LP-GAN conv 1x32x32x32 * 128x32x3x3 s2", "conv2d", (1, 32, 32, 32), (128, 32, 3, 3),
             (("stride", 2),), anchor=Anchor(LPGAN, 0.12), conv=True),
    Workload("LP-GAN FC 580x580 (linear, x 1x580)", "linear", (1, 580), (580, 580)),
)


def fixed_point(t: torch.Tensor, frac_bits: int = ring.DEFAULT_FRAC_BITS) -> torch.Tensor:
    """t rounded to the fixed-point grid, as the parties encode it."""
    unit = 2.0 ** -frac_bits
    return torch.round(t / unit) * unit


def inputs(workload: Workload, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh float64 inputs of one repeat (both parties can draw them; each shares only its own)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(workload.x_shape, generator=g, dtype=torch.float64)
    y = torch.randn(workload.y_shape, generator=g, dtype=torch.float64)
    return x, y


def in_party_process() -> bool:
    """True in run_local's party processes; False in the offline phase's dry run in this process."""
    return mp.current_process().name.startswith("mpcrt-party")


# ---- the program both parties run --------------------------------------------------------------

async def product_program(party: mpcrt.Party, workload: Workload, repeats: int, seed: int) -> dict[str, Any]:
    """WARMUP + `repeats` products, each timed alone; returns this party's timings, counts and error."""
    if in_party_process():
        pin_to_core(party.id)
    kwargs = dict(workload.kwargs)
    barrier = await party.input(torch.zeros(1) if party.id == 0 else None, src=0)
    warmup, times, rounds, sent, received, errors = [], [], [], [], [], []
    for i in range(WARMUP + repeats):  # the first WARMUP are left out of the medians
        x, y = inputs(workload, seed + i)
        xs = await party.input(x if party.id == 0 else None, src=0)
        ys = await party.input(y if party.id == 1 else None, src=1)
        await barrier.reveal()  # both parties start the op within half a round trip
        s = party.stats
        before = (s.rounds, s.bytes_sent, s.bytes_received)
        start = time.perf_counter()
        z = await workload.secure()(xs, ys, **kwargs)
        elapsed = time.perf_counter() - start
        if i < WARMUP:
            warmup.append(elapsed)
        else:
            times.append(elapsed)
            rounds.append(s.rounds - before[0])
            sent.append(s.bytes_sent - before[1])
            received.append(s.bytes_received - before[2])
        got = await z.reveal()
        if party.id == 0:
            f = party.frac_bits
            expected = workload.plaintext()(fixed_point(x, f), fixed_point(y, f), **kwargs)
            errors.append(float((got - expected).abs().max()) * 2.0 ** f)
    return {"warmup_times": warmup, "times": times, "rounds": rounds, "bytes_sent": sent, "bytes_received": received,
            "max_error_ulp": max(errors) if errors else None, "ops": WARMUP + repeats, "frac_bits": party.frac_bits,
            "offline": party.stats.offline.as_dict()}


# ---- measuring -----------------------------------------------------------------------------------

@dataclass
class Result:
    """One workload's figures; bytes and offline cost are per product."""

    name: str
    online_s: float  # the slower party's median
    online_s_by_party: tuple[float, float]
    rounds: int
    bytes_sent: int  # per party (both send the same)
    bytes_received: int
    offline_bytes: float  # from the dealer, both parties together (its corrections go to either)
    offline_s: float  # party 1 (party 0 derives its material from its seed)
    offline_s_party0: float
    max_error_ulp: float
    plaintext_s: float
    anchor: Anchor | None = None
    conv: bool = False
    repeats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    end_to_end_s: float = float("nan")  # the slower party's median with the dealer on demand


def plaintext_seconds(workload: Workload, repeats: int, seed: int) -> float:
    """Median seconds of the float32 torch op on one thread in this process, after a warm-up.

    Called right after the workload's run_local, on a heap that already holds freed memory: in a fresh
    process each call's new memory costs page faults (~2 us each on the benchmark VM) that can make a
    conv2d several times slower, for many calls.
    """
    fn, kwargs = workload.plaintext(), dict(workload.kwargs)
    times = []
    for i in range(repeats + 1):
        x, y = (t.float() for t in inputs(workload, seed + i))
        start = time.perf_counter()
        fn(x, y, **kwargs)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(workload: Workload, repeats: int, seed: int = 1, frac_bits: int = ring.DEFAULT_FRAC_BITS,
            end_to_end: bool = True) -> Result:
    def run(offline: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        return mpcrt.run_local(product_program, workload, repeats, seed, transport="tcp", processes=True,
                               offline=offline, timeout=120.0, frac_bits=frac_bits)

    r0, r1 = run(offline=True)
    end = float("nan")
    if end_to_end:
        e0, e1 = run(offline=False)
        end = max(statistics.median(e0["times"]), statistics.median(e1["times"]))
    unique = {(a, b, c) for a, b, c in zip(r0["rounds"] + r1["rounds"], r0["bytes_sent"] + r1["bytes_sent"],
                                             r0["bytes_received"] + r1["bytes_received"])}
    if len(unique) != 1:
        raise RuntimeError(f"{workload.name}: counts differ between repeats or parties: {sorted(unique)}")
    (rounds, sent, received), = unique
    ops_count = r1["ops"]
    if r1["offline"]["requests"] != 2 * ops_count:
        raise RuntimeError(f"{workload.name}: expected 2 dealer requests per product, got {r1['offline']}")
    medians = (statistics.median(r0["times"]), statistics.median(r1["times"]))
    return Result(workload.name, max(medians), medians, rounds, sent, received,
                  offline_bytes=(r0["offline"]["bytes_received"] + r1["offline"]["bytes_received"]) / ops_count,
                  offline_s=r1["offline"]["seconds"] / ops_count,
                  offline_s_party0=r0["offline"]["seconds"] / ops_count,
                  max_error_ulp=r0["max_error_ulp"], plaintext_s=plaintext_seconds(workload, repeats, seed),
                  anchor=workload.anchor, conv=workload.conv, repeats=repeats,
                  extra={"times_party0": r0["times"], "times_party1": r1["times"],
                         "warmup_times_party0": r0["warmup_times"], "warmup_times_party1": r1["warmup_times"],
                         "frac_bits": r0["frac_bits"]}, end_to_end_s=end)


# ---- the stress test of truncation -----------------------------------------------------------------

def stress_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs randn * scale, each pair's scales drawn from the allowed pairs of STRESS_SCALES."""
    scales = torch.tensor(STRESS_SCALES, dtype=torch.float64)
    pairs = torch.tensor([(a, b) for a in range(len(scales)) for b in range(len(scales))
                          if scales[a] * scales[b] <= STRESS_MAX_SCALE_PRODUCT])
    g = torch.Generator().manual_seed(seed)
    which = pairs[torch.randint(len(pairs), (n,), generator=g)]
    x = torch.randn(n, generator=g, dtype=torch.float64) * scales[which[:, 0]]
    y = torch.randn(n, generator=g, dtype=torch.float64) * scales[which[:, 1]]
    return x, y


async def stress_program(party: mpcrt.Party, n: int, seed: int) -> dict[str, Any]:
    """ops.mul over n pairs in chunks; party 0 returns the worst error and the worst chunk's seed."""
    worst, worst_chunk, chunks, magnitude = 0.0, -1, 0, 0.0
    for start in range(0, n, STRESS_CHUNK):
        x, y = stress_pairs(min(STRESS_CHUNK, n - start), seed + chunks)
        xs = await party.input(x if party.id == 0 else None, src=0)
        ys = await party.input(y if party.id == 1 else None, src=1)
        got = await (await ops.mul(xs, ys)).reveal()
        if party.id == 0:
            expected = fixed_point(x) * fixed_point(y)
            error = float((got - expected).abs().max()) / ULP
            magnitude = max(magnitude, float(expected.abs().max()))
            if error > worst:
                worst, worst_chunk = error, chunks
        chunks += 1
    return {"n": n, "chunks": chunks, "max_error_ulp": worst, "worst_chunk": worst_chunk,
            "max_abs_product": magnitude}


def stress(n: int, seed: int = 1000) -> dict[str, Any]:
    start = time.perf_counter()
    result, _ = mpcrt.run_local(stress_program, n, seed, timeout=600.0)
    result["seconds"] = time.perf_counter() - start
    result["ok"] = result["max_error_ulp"] <= 2
    return result


# ---- the report ------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def measurement_table(results: Sequence[Result]) -> str:
    header = ("workload", "online ms", "end to end ms", "rounds", "online MB sent", "dealer MB (both)",
              "offline ms (p1)", "max err (ulp)", "plain fp32 ms", "anchor")
    lines = []
    for r in results:
        a = r.anchor
        anchor = "" if a is None else f"{a.who}: {_ms(a.seconds)} ms" + (
            f" / {a.rounds} rd / {a.mb:g} MB" if a.rounds is not None else "")
        lines.append((r.name, _ms(r.online_s), "" if r.end_to_end_s != r.end_to_end_s else _ms(r.end_to_end_s),
                      str(r.rounds), f"{r.bytes_sent / MB:.2f}", f"{r.offline_bytes / MB:.2f}",
                      _ms(r.offline_s), f"{r.max_error_ulp:.2f}", f"{r.plaintext_s * 1e3:.2f}", anchor))
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if 0 < i < len(cells) - 1 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([rule, joined(header), rule, *map(joined, lines), rule])


def target_rows(results: Sequence[Result]) -> list[Row]:
    """Ratios against the anchors.

    Bytes, the target: our online bytes sent per party + the dealer's bytes (both parties), against CrypTen's MB.
    CrypTen's MB are 16 bytes per element of x and y in every row (8 sent + 8 received for opening the
    operands; truncation local; its TFP dealer sends nothing), so the like-for-like figure is our online
    bytes sent + received, printed too, without a target.
    """
    rows = []
    for r in results:
        a = r.anchor
        if a is not None and a.who == CRYPTEN:
            t = r.online_s / a.seconds
            rows.append(Row(r.name, "online time / CrypTen time", r.online_s * 1e3, "ms", "<= 1", t, t <= 1))
            if r.end_to_end_s == r.end_to_end_s:  # NaN with --online-only; CrypTen's TFP makes triples in its op
                e = r.end_to_end_s / a.seconds
                rows.append(Row(r.name, "end to end, dealer on demand / CrypTen time", r.end_to_end_s * 1e3, "ms",
                                "<= 1", e, e <= 1))
            total = (r.bytes_sent + r.offline_bytes) / MB
            b = total / a.mb  # type: ignore[operator]
            rows.append(Row(r.name, "(online MB sent + dealer MB) / CrypTen MB", total, "MB", "<= 1", b, b <= 1))
            both = (r.bytes_sent + r.bytes_received) / MB
            rows.append(Row(r.name, "online MB sent + received / CrypTen MB (no target)", both, "MB", "",
                            both / a.mb))  # type: ignore[operator]
        elif a is not None:
            rows.append(Row(r.name, f"online time / {a.who} time (no target)", r.online_s * 1e3, "ms", "",
                            r.online_s / a.seconds))
        if r.conv:
            p = r.online_s / r.plaintext_s
            rows.append(Row(r.name, "online time / plaintext fp32 torch", r.online_s * 1e3, "ms", "<= 4", p, p <= 4))
    return rows


def stress_line(s: dict[str, Any]) -> str:
    return (f"truncation stress: {s['n']:,} products in {s['chunks']} chunks of {STRESS_CHUNK:,}, max error "
            f"{s['max_error_ulp']:.3f} ulp (2^-16), |product| up to {s['max_abs_product']:.3g}: "
            f"{'<= 2 everywhere' if s['ok'] else 'EXCEEDS 2'}; {s['seconds']:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arith", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="2 repeats of each product instead of 5")
    parser.add_argument("--stress", type=int, default=0, metavar="N",
                        help="also run N products of mixed magnitudes (truncation stress at f = 16; 0: skip)")
    parser.add_argument("--frac-bits", type=int, default=16,
                        help="fixed-point fractional bits of the products (default %(default)s; errors in its units)")
    parser.add_argument("--online-only", action="store_true",
                        help="skip the second run of each product with the dealer on demand (end to end)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 2 if args.quick else 5
    started = time.perf_counter()
    results = [measure(w, repeats, frac_bits=args.frac_bits, end_to_end=not args.online_only) for w in WORKLOADS]
    print(measurement_table(results))
    print(f"online: median of {repeats} products after {WARMUP} warm-ups, the slower party; MB = 10^6 bytes; bytes "
          "and offline cost per product; offline: party 1's dealer material (party 0 derives its own from its seed)")
    rows = target_rows(results)
    print(format_table(rows))
    print(f"{sum(r.met is True for r in rows)} of {sum(r.met is not None for r in rows)} targets met; "
          f"{time.perf_counter() - started:.0f} s")
    stressed = stress(args.stress) if args.stress else None
    if stressed is not None:
        print(stress_line(stressed))
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "repeats": repeats,
                  "frac_bits": args.frac_bits,
                  "results": [asdict(r) for r in results], "rows": [asdict(r) for r in rows], "stress": stressed}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if stressed is None or stressed["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
