"""Secure GAN workloads end to end: D forward, G forward, secure synthesis and one training iteration.

    .venv/bin/python -m bench.gan [--network loopback|lan|wan|mobile|MBPS/RTT|both|all|N1,N2] [--only NAME;...]
                                  [--comparison auto|tree|lpgan|dcf] [--frac-bits 16] [--repeats N] [--json PATH]

LP-GAN's SD and SG workloads (D and G forward on a batch of 64; its prototype took 3.3 s and
7.6 s at batch 4, one process, no network), secure synthesis of 64 images (G in inference
mode on shared noise, batch norm from its running statistics, the images revealed to party 0
alone, standing for the owner) and one full training iteration (D on a real and a fake
batch, then G, Adam), for LP-GAN's DCGAN at batch 64 and the small preset. Each
workload is one `mpcrt.run_local(..., transport="tcp", processes=True, offline=True)`: two
party processes over mutual TLS 1.3 on loopback (one torch thread each, each on its own
core), the dealer as a TLS service in this process, all dealer material fetched before the
program starts; `--network wan` adds the simulated 400 Mbit/s, 40 ms RTT link. The timed
part is the online phase of the op after WARMUP untimed ones (none for the "first
iteration" workload) and a 1-element reveal that
lines the parties up; time is the slower party's. A DCGAN iteration's material is too large
to prefetch for two iterations (party 1 passed 16 GB and was killed), so the warm DCGAN
iteration prefetches only the timed iteration's material (the plan of the whole program less
that of its warm-up, both from dry runs; the warm-up fetches on demand). Also shown: the
iteration with the dealer serving on demand (its time includes waiting for the dealer,
reported apart as party 1's "dealer wait", the sum over its requests; concurrent requests
overlap), the iteration as a training job runs it (`lpgan train`: material streamed one
iteration ahead by mpcrt.stream, made while the parties compute; timed after the stream
runs ahead) and the first iteration of fresh processes, prefetched. The "timed" column says
whether a time is the online phase's or end to end (the dealer's work included). The
baseline is the same step in plain torch (float32, one thread, autograd, torch.optim.Adam,
BCELoss) in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

import gan
import mpcrt
from bench.arith import in_party_process
from bench.transport import machine, network_spec, pin_to_core, text_table
from gan import optim
from gan.cli import non_negative_int
from gan.step import train_step
from gan.train import TrainConfig, initial_models
from mpcrt import ring
from mpcrt.dealer import Request
from mpcrt.offline import record_plan
from mpcrt.stream import MaterialStream
from transports import resolve_network
from transports.loop import run as run_loop

WARMUP = 1  # the first op in a fresh party process runs 2-6x slower (page faults of new memory)
STREAM_WARMUP = 3  # iterations before a stream has seen its plan twice in a row and runs ahead
MB = 1e6
TIMEOUT = 900.0


@dataclass(frozen=True)
class Workload:
    name: str
    preset: str
    batch: int
    what: str  # "d_forward", "g_forward", "synthesis" or "iteration"
    repeats: int = 2
    # dealer material: before the program ("all", or "timed": not the warm-up's; the time is the
    # online phase's), "none" (on demand) or "stream" (ahead, as a job: mpcrt.stream); both end to end
    prefetch: str = "all"
    warmup: int = WARMUP

    @property
    def end_to_end(self) -> bool:
        return self.prefetch in ("none", "stream")


WORKLOADS = (
    Workload("SD: D forward, DCGAN, batch 64", "dcgan", 64, "d_forward"),
    Workload("SG: G forward, DCGAN, batch 64", "dcgan", 64, "g_forward"),
    Workload("synthesis: 64 images, DCGAN", "dcgan", 64, "synthesis"),
    Workload("iteration, DCGAN, batch 64", "dcgan", 64, "iteration", repeats=1, prefetch="timed"),
    Workload("iteration, DCGAN, batch 64, dealer on demand", "dcgan", 64, "iteration", repeats=1, prefetch="none"),
    # one iteration's material fits (party 1 peaks near 8 GB), so the first one, prefetched: an upper bound
    Workload("first iteration, DCGAN, batch 64, prefetched", "dcgan", 64, "iteration", repeats=1, warmup=0),
    # as a training job runs: the plan repeats from the second iteration, so the fourth on is streamed
    Workload("iteration, DCGAN, batch 64, streamed", "dcgan", 64, "iteration", repeats=2, prefetch="stream",
             warmup=STREAM_WARMUP),
    Workload("iteration, small, batch 16", "small", 16, "iteration", repeats=3),
    Workload("iteration, small, batch 32", "small", 32, "iteration", repeats=5),
    Workload("iteration, small, batch 32, streamed", "small", 32, "iteration", repeats=5, prefetch="stream",
             warmup=STREAM_WARMUP),
    Workload("iteration, small, batch 64", "small", 64, "iteration"),
)


@dataclass
class Result:
    workload: str
    network: str
    seconds: list[float]  # per timed repeat, the slower party
    rounds: int
    mb_sent: float  # per party (party 0), per op
    mb_received: float
    offline_mb: tuple[float, float]  # dealer material each party receives, per op
    dealer_wait_s: float  # the longer wait of a party for material during the timed op (0 when prefetched)
    plain_seconds: float
    wall_s: float
    end_to_end: bool = False  # the time includes making the dealer's material (else online only)
    peak_rss_gb: float = 0.0  # the larger party process's peak resident memory

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


async def program(party: mpcrt.Party, w: Workload, seed: int) -> dict:
    if in_party_process():  # not in a dry run (mpcrt.offline): it runs both parties in this process
        pin_to_core(party.id)
    torch.set_num_threads(1)
    cfg = TrainConfig(preset=w.preset, batch_size=w.batch, seed=seed)
    preset = cfg.preset_()
    d_model, g_model = initial_models(cfg)
    d, g = await gan.secure(d_model, party, src=0), await gan.secure(g_model, party, src=0)
    opt_d, opt_g = optim.Adam(d.parameters(), 2e-4, (0.5, 0.999)), optim.Adam(g.parameters(), 2e-4, (0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    times, deltas = [], []
    stream = None
    if w.prefetch == "stream":
        party.prefetched = True  # as gan.server_jobs: the material streams ahead of the online phase
        stream = MaterialStream(party, range(1, w.warmup + w.repeats + 1))
    for r in range(w.warmup + w.repeats):
        with stream.iteration(r + 1) if stream else contextlib.nullcontext():
            seconds, delta = await _one(party, w, d, g, opt_d, opt_g, gen, preset)
        if r >= w.warmup:
            times.append(seconds)
            deltas.append(delta)
    return {"times": times, "deltas": deltas, "offline_bytes": party.stats.offline.bytes_received,
            "ops": w.warmup + w.repeats, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


async def _one(party: mpcrt.Party, w: Workload, d: gan.nn.Module, g: gan.nn.Module, opt_d: optim.Optimizer,
               opt_g: optim.Optimizer, gen: torch.Generator, preset: Any) -> tuple[float, tuple]:
    """One op on fresh inputs: its time and its (rounds, bytes sent, received, offline seconds)."""
    owner = party.id == 0
    images = torch.rand(w.batch, preset.channels, preset.image_size, preset.image_size, generator=gen) * 2 - 1
    noise = torch.randn(w.batch, preset.nz, 1, 1, generator=gen)
    x = await party.input(images if owner else None, src=0)
    z = await party.input(noise if owner else None, src=0)
    await (await party.input(torch.zeros(1) if owner else None, src=0)).reveal()  # lines the parties up
    before = (party.stats.rounds, party.stats.bytes_sent, party.stats.bytes_received,
              party.stats.offline.seconds)
    start = time.perf_counter()
    if w.what == "d_forward":
        await d.forward(x)
    elif w.what == "g_forward":
        await g.forward(z)
    elif w.what == "synthesis":
        await _synthesize(g, z)
    else:
        await train_step(d, g, opt_d, opt_g, x, z)
    seconds = time.perf_counter() - start
    after = (party.stats.rounds, party.stats.bytes_sent, party.stats.bytes_received, party.stats.offline.seconds)
    return seconds, tuple(a - b for a, b in zip(after, before, strict=True))


async def _synthesize(g: gan.nn.Module, z: mpcrt.ArithmeticShare) -> None:
    """As gan.server_jobs' synthesis: G in inference mode, the images to the owner (party 0 here) alone."""
    g.eval()
    images = await g.forward(z)
    g.train()
    await images.reveal(to=0)


def plaintext_seconds(w: Workload, repeats: int = 5) -> float:
    """The same op in plain torch: float32, one thread, median of `repeats` after one warm-up."""
    torch.set_num_threads(1)
    cfg = TrainConfig(preset=w.preset, batch_size=w.batch)
    preset = cfg.preset_()
    d, g = (m.float() for m in initial_models(cfg))
    opt_d, opt_g = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999)), torch.optim.Adam(
        g.parameters(), 2e-4, betas=(0.5, 0.999))
    loss = nn.BCELoss()
    ones, zeros = torch.ones(w.batch, 1), torch.zeros(w.batch, 1)

    def step() -> None:
        x = torch.rand(w.batch, preset.channels, preset.image_size, preset.image_size) * 2 - 1
        z = torch.randn(w.batch, preset.nz, 1, 1)
        if w.what == "d_forward":
            with torch.no_grad():
                d(x)
            return
        if w.what in ("g_forward", "synthesis"):
            with torch.no_grad():
                (g.eval() if w.what == "synthesis" else g)(z)
            return
        fake = g(z)
        opt_d.zero_grad()
        (loss(d(x), ones) + loss(d(fake.detach()), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        loss(d(fake), ones).backward()
        opt_g.step()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_plan(w: Workload, network: str | dict | None, seed: int, comparison: str = "auto",
               frac_bits: int = ring.DEFAULT_FRAC_BITS) -> list[Request]:
    """The dealer requests of the timed repeats: the whole program's less its warm-up's, in
    the whole program's order."""
    model = resolve_network(network)
    options = {"network": model, "timeout": TIMEOUT, "comparison": comparison, "frac_bits": frac_bits}
    whole = run_loop(record_plan(program, w, seed, **options))
    warmup = run_loop(record_plan(program, replace(w, repeats=0), seed, **options))
    # concurrent ops may ask in another order from one dry run to the next: compare as sets
    warm = set(warmup)
    if not warm <= set(whole):
        raise RuntimeError("the warm-up's dealer requests are not all among the whole program's")
    return [r for r in whole if r not in warm]


def measure(w: Workload, network: str, seed: int = 1, comparison: str = "auto",
            frac_bits: int = ring.DEFAULT_FRAC_BITS, dealer_workers: int = 0) -> Result:
    start = time.perf_counter()
    model = network_spec(network)
    plan = timed_plan(w, model, seed, comparison, frac_bits) if w.prefetch == "timed" else None
    r0, r1 = mpcrt.run_local(program, w, seed, transport="tcp", processes=True, offline=w.prefetch == "all",
                             plan=plan, network=model, timeout=TIMEOUT, comparison=comparison, frac_bits=frac_bits,
                             dealer_workers=dealer_workers)
    wall = time.perf_counter() - start
    seconds = [max(a, b) for a, b in zip(r0["times"], r1["times"], strict=True)]
    rounds, sent, received, _ = r0["deltas"][-1]
    waits = [max(d0[3], d1[3]) for d0, d1 in zip(r0["deltas"], r1["deltas"], strict=True)]  # either may wait now
    wait = statistics.median(waits) if w.prefetch == "none" else 0.0
    return Result(w.name, network, seconds, int(rounds), sent / MB, received / MB,
                  (r0["offline_bytes"] / r0["ops"] / MB, r1["offline_bytes"] / r1["ops"] / MB), wait,
                  plaintext_seconds(w), wall, w.end_to_end,
                  max(r0["peak_rss"], r1["peak_rss"]) / 1e9)


def table(results: Sequence[Result]) -> str:
    header = ("workload", "network", "s", "timed", "dealer wait s", "rounds", "MB sent", "MB recv",
              "dealer MB p0/p1", "peak RSS GB", "plain torch s", "secure / plain")
    rows = [(r.workload, r.network, f"{r.median:.2f}", "end to end" if r.end_to_end else "online",
             f"{r.dealer_wait_s:.2f}" if r.dealer_wait_s else "-",
             str(r.rounds), f"{r.mb_sent:.0f}", f"{r.mb_received:.0f}", f"{r.offline_mb[0]:.0f}/{r.offline_mb[1]:.0f}",
             f"{r.peak_rss_gb:.1f}", f"{r.plain_seconds:.4f}", f"{r.median / r.plain_seconds:.0f}x")
            for r in results]
    return text_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gan", description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="loopback",
                        help="loopback, lan, wan, mobile or a custom link MBPS/RTT (e.g. 100/20), "
                             "comma-separated, 'both' (loopback,wan) or 'all'")
    parser.add_argument("--comparison", default="auto", help="auto, tree, lpgan or dcf")
    parser.add_argument("--frac-bits", type=int, default=16)
    parser.add_argument("--repeats", type=int, help="timed repeats per workload (default: each workload's own)")
    parser.add_argument("--only", help="semicolon-separated substrings of workload names")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--dealer-workers", type=non_negative_int, default=0, metavar="N",
                        help="processes that make the dealer's material (default 0: the dealer's own)")
    args = parser.parse_args(argv)
    networks = {"both": ("loopback", "wan"), "all": ("loopback", "lan", "wan", "mobile")}.get(
        args.network, tuple(args.network.split(",")))
    for network in networks:
        try:
            network_spec(network)
        except ValueError as exc:
            parser.error(str(exc))
    chosen = [w for w in WORKLOADS if not args.only or any(s in w.name for s in args.only.split(";"))]
    if not chosen:
        parser.error(f"no workload matches {args.only!r}; names: {[w.name for w in WORKLOADS]}")
    torch.set_num_threads(1)  # the dealer runs in this process: one thread, as `lpgan train` and `lpgan demo` run it
    results = []
    for network in networks:
        for w in chosen:
            print(f"{w.name} on {network} ...", file=sys.stderr, flush=True)
            timed = replace(w, repeats=args.repeats) if args.repeats else w
            results.append(measure(timed, network, comparison=args.comparison, frac_bits=args.frac_bits,
                                   dealer_workers=args.dealer_workers))
            print(table(results[-1:]), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": [asdict(r) | {"median": r.median} for r in results]}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
