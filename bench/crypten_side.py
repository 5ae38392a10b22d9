"""CrypTen side by side: the same workloads, the same inputs, in the same run.

    .venv/bin/python -m bench.crypten_side --setup      # once: builds .venv-crypten (CrypTen 0.4.1)
    .venv/bin/python -m bench.crypten_side [--only NAME;...] [--repeats N] [--network loopback|wan|both]
                                           [--json PATH]

Optional, not in CI: CrypTen needs its own environment (`--setup`: torch as pinned here,
`crypten==0.4.1 --no-deps` plus omegaconf, PyYAML and onnx, pinned by
bench/crypten-constraints.txt; torchvision, tensorboard, pandas, scipy and scikit-learn are
not needed for these workloads). bench/crypten_runner.py runs CrypTen's side in that
environment; ours runs here, two party processes over mutual TLS on loopback with the
dealer's material fetched first (its cost reported apart). Both: one torch thread per party,
a warm-up, the median of the timed repeats. CrypTen cannot run over a simulated network, so
its `wan` time is a clearly labelled model: its measured loopback time + rounds x one-way
delay (20 ms) + the MB it sends / 400 Mbit/s; ours on `wan` is measured through the simulator.
Bytes on both sides are what one party sends plus what it receives online, as CrypTen's
communicator counts them; ours adds the dealer's material apart ("+offline": CrypTen's
trusted-first-party provider, the default, makes its triples at party 0 with no traffic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import gan
import mpcrt
from bench import arith, nonlinear
from bench.crypten_runner import D_STEP_LAYERS, LR, WORKLOADS, d_step_torch, make_inputs
from bench.transport import machine, pin_to_core, text_table
from gan import optim
from gan.loss import bce_logit_grad
from transports import PRESETS

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-crypten"
WAN = PRESETS["wan"]
# ours: the workload in bench/arith.py or bench/nonlinear.py with the same inputs
ARITH = {"mul 1e5": "mul 1e5", "conv2d b16 3->64 64x64 k4 s2 p1": "conv2d b16 3->64 64x64 k4 s2 p1",
         "conv_transpose2d b16 128->64 8->16 k4 s2 p1": "conv_transpose2d b16 128->64 8->16 k4 s2 p1"}
# ours only, against CrypTen's row of the same inputs: inv_sqrt with its valid range declared as the one CrypTen's
# is measured on ([2^-4, 2^4) covers [0.1, 10]; ours covers [2^-14, 2^14) by default, 20 thresholds more)
DECLARED = "inv_sqrt 1e5 on [0.1, 10], range declared"
DECLARED_EXPONENTS = (-4, 3)
# and by the DCF, whatever "auto" takes (with material prefetched, as here, it weighs the online phase alone:
# the DCF for ReLU 1e5 on wan, the tree on loopback): ReLU in one round, the inverse square root's range
# conversion in one opening (one key serves its 29 breakpoints)
RELU_DCF = "relu 1e5, DCF"
INV_SQRT_DCF = "inv_sqrt 1e5 on [0.1, 10], DCF"
SAME_INPUTS = {DECLARED: "inv_sqrt 1e5 on [0.1, 10]", RELU_DCF: "relu 1e5", INV_SQRT_DCF: "inv_sqrt 1e5 on [0.1, 10]"}
METHOD = {RELU_DCF: "dcf", INV_SQRT_DCF: "dcf"}  # the comparison method of a row, where not the automatic choice
NONLINEAR = {"relu 1e5": ("relu", (100_000,), ("uniform", -3.0, 3.0)),
             RELU_DCF: ("relu", (100_000,), ("uniform", -3.0, 3.0)),
             "sigmoid 1e5": ("sigmoid", (100_000,), ("uniform", -30.0, 30.0)),
             "tanh 1e5": ("tanh", (100_000,), ("uniform", -30.0, 30.0)),
             "reciprocal 1e5": ("reciprocal", (100_000,), ("loguniform", 1e-2, 1e3)),
             "inv_sqrt 1e5 on [0.1, 10]": ("inv_sqrt", (100_000,), ("loguniform", 0.1, 10.0)),
             "batch_norm train 64x32x24x24": ("batch_norm", (64, 32, 24, 24), ("bn", 0.0, 0.0)),
             DECLARED: ("inv_sqrt", (100_000,), ("loguniform", 0.1, 10.0)),
             INV_SQRT_DCF: ("inv_sqrt", (100_000,), ("loguniform", 0.1, 10.0))}
TARGETS = {"relu 1e5": 1 / 5, "sigmoid 1e5": 1 / 5, "batch_norm train 64x32x24x24": 1 / 3,
           "conv2d b16 3->64 64x64 k4 s2 p1": 1.0, "conv_transpose2d b16 128->64 8->16 k4 s2 p1": 1.0,
           "D step b16 32x32": 1 / 3}
WAN_TARGETS = {"D step b16 32x32": 1 / 5, "relu 1e5": 1 / 10, RELU_DCF: 1 / 10}


def setup() -> int:
    """Build .venv-crypten: torch and numpy as pinned for this project, CrypTen without its heavy deps."""
    python = VENV / "bin" / "python"
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), "torch", "numpy"],
             [str(python), "-m", "pip", "install", "-q", "--no-deps", "-c",
              str(REPO / "bench" / "crypten-constraints.txt"), "crypten"],
             [str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "bench" / "crypten-constraints.txt"),
              "-c", str(REPO / "constraints.txt"), "omegaconf", "pyyaml", "onnx"]]
    for step in steps:
        print("+", " ".join(step), file=sys.stderr, flush=True)
        subprocess.run(step, check=True)
    print(f"CrypTen environment ready: {VENV}")
    return 0


def run_crypten(names: list[str], repeats: int) -> dict[str, dict]:
    python = VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no CrypTen environment at {VENV}; build it first: python -m bench.crypten_side --setup")
    done = subprocess.run([str(python), str(REPO / "bench" / "crypten_runner.py"), "--only", ";".join(names),
                           "--repeats", str(repeats)], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"CrypTen's run failed:\n{done.stderr[-3000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["name"]: r for r in results}


# ---- our D step ---------------------------------------------------------------------------------------

async def timed_repeats(party: mpcrt.Party, warmup: int, repeats: int,
                        prepare: Callable[[int], Awaitable[Any]], step: Callable[[Any], Awaitable[Any]]
                        ) -> dict[str, Any]:
    """warmup + repeats of `step(await prepare(i))` in one party's program (one torch thread,
    pinned in a party process), each lined up with the peer by a 1-element reveal after its
    inputs; the timed ones' times, rounds and bytes sent + received, and the offline stats."""
    torch.set_num_threads(1)
    if arith.in_party_process():
        pin_to_core(party.id)
    times, rounds, moved = [], [], []
    for i in range(warmup + repeats):
        state = await prepare(i)
        await (await party.input(torch.zeros(1) if party.id == 0 else None, src=0)).reveal()  # line up
        before = (party.stats.rounds, party.stats.bytes_sent + party.stats.bytes_received)
        start = time.perf_counter()
        await step(state)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
            rounds.append(party.stats.rounds - before[0])
            moved.append(party.stats.bytes_sent + party.stats.bytes_received - before[1])
    return {"times": times, "rounds": rounds, "moved": moved, "offline": party.stats.offline.as_dict()}


async def d_step_program(party: mpcrt.Party, warmup: int, repeats: int) -> dict[str, Any]:
    """The D step of crypten_runner on shares: forward, BCE gradient at the logits, backward, SGD."""
    shape = WORKLOADS["D step b16 32x32"][1][0]

    async def prepare(i: int):
        d = await gan.secure(d_step_torch(), party, src=0)
        x = await party.input(make_inputs(("uniform", -1.0, 1.0), shape, 100 * i).float() if party.id == 0 else None,
                              src=0)
        return d, optim.SGD(d.parameters(), LR, 0.0), x

    async def step(state) -> None:
        d, opt, x = state
        grad = await bce_logit_grad(await d.forward(x), 1.0)
        d.zero_grad()
        await d.backward_from_logits(grad)
        await opt.step()

    return await timed_repeats(party, warmup, repeats, prepare, step)


def summary(r0: dict[str, Any], r1: dict[str, Any], ops: int) -> dict[str, Any]:
    """Both parties' timed repeats (times, rounds, bytes sent + received, offline) as one row:
    the slower party's median, the most rounds and bytes, party 1's dealer MB per op (of `ops`
    in the run)."""
    return {"seconds": max(statistics.median(r0["times"]), statistics.median(r1["times"])),
            "rounds": max(r0["rounds"] + r1["rounds"]), "mb": max(r0["moved"] + r1["moved"]) / 1e6,
            "offline_mb": r1["offline"]["bytes_received"] / ops / 1e6, "max_error": None}


def ours_d_step(network: str, repeats: int) -> dict[str, Any]:
    r0, r1 = mpcrt.run_local(d_step_program, 1, repeats, transport="tcp", processes=True, offline=True,
                             timeout=600.0, network="wan" if network == "wan" else None)
    return summary(r0, r1, 1 + repeats)


# ---- ours, every workload -----------------------------------------------------------------------------

def ours(name: str, network: str, repeats: int) -> dict[str, Any]:
    if name == "D step b16 32x32":
        return ours_d_step(network, repeats)
    if name in ARITH and network == "loopback":
        (w,) = [w for w in arith.WORKLOADS if w.name == ARITH[name]]
        r = arith.measure(w, repeats)
        return {"seconds": r.online_s, "end_to_end_seconds": r.end_to_end_s, "rounds": r.rounds,
                "mb": (r.bytes_sent + r.bytes_received) / 1e6, "offline_mb": r.offline_bytes / 1e6,
                "max_error": r.max_error_ulp * 2.0**-16}
    if name in NONLINEAR:
        op, shape, kind = NONLINEAR[name]
        w = nonlinear.Workload(name, op, shape, kind, heavy=op in ("reciprocal", "inv_sqrt", "batch_norm"),
                               relative=op in ("reciprocal", "inv_sqrt"),
                               exponents=DECLARED_EXPONENTS if name == DECLARED else None)
        r = nonlinear.measure(w, METHOD.get(name, "auto"), network, False,
                              nonlinear.Limits(budget_s=60.0, max_run_s=120.0))
        if not r.ok:
            return {"error": r.error or r.skipped}
        return {"seconds": r.online_s, "end_to_end_seconds": r.end_to_end_s, "rounds": r.rounds,
                "mb": (r.bytes_sent + r.bytes_received) / 1e6, "offline_mb": max(r.offline_bytes) / 1e6,
                "max_error": r.max_rel_error if w.relative else r.max_abs_error}
    return {"error": f"not measured on {network}"}


def crypten_wan(c: dict[str, Any]) -> float:
    """CrypTen's modelled wan time: measured loopback time + rounds x one-way delay + the bytes one
    party sends (half of what CrypTen counts: sent + received, the same both ways) / bandwidth."""
    return c["seconds"] + c["rounds"] * WAN.rtt_s / 2 + c["mb"] / 2 * 8e6 / WAN.bandwidth_bps


def report(crypten: dict[str, dict], mine: dict[tuple[str, str], dict], networks: Sequence[str]) -> str:
    header = ["workload", "network", "ours ms", "CrypTen ms", "ratio", "target", "ours end to end ms", "ratio",
              "ours rounds", "CrypTen rounds", "ours MB sent+recv (+offline)", "CrypTen MB sent+recv", "ours err",
              "CrypTen err"]
    rows = []
    for (name, network), o in mine.items():
        c = crypten.get(SAME_INPUTS.get(name, name))
        if c is None or "error" in o:
            rows.append([name, network, o.get("error", "-"), *[""] * 11])
            continue
        theirs = c["seconds"] if network == "loopback" else crypten_wan(c)
        ratio = o["seconds"] / theirs
        target = (TARGETS if network == "loopback" else WAN_TARGETS).get(name)
        verdict = "" if target is None else f"<= {target:.2f} {'PASS' if ratio <= target else 'FAIL'}"
        # end to end (the dealer on demand) against CrypTen's time, which makes its triples inside the op
        end = o.get("end_to_end_seconds", math.nan)
        ends = ("", "") if math.isnan(end) or network != "loopback" else (f"{end * 1e3:.1f}", f"{end / theirs:.3f}")
        rows.append([name, network, f"{o['seconds'] * 1e3:.1f}",
                     f"{theirs * 1e3:.1f}" + (" (model)" if network == "wan" else ""), f"{ratio:.3f}", verdict, *ends,
                     str(o["rounds"]), str(c["rounds"]), f"{o['mb']:.1f} (+{o['offline_mb']:.1f})", f"{c['mb']:.1f}",
                     "-" if o["max_error"] is None else f"{o['max_error']:.2g}",
                     "-" if c["max_error"] is None else f"{c['max_error']:.2g}"])
    return text_table(header, rows)


def measure_ours(names: Sequence[str], networks: Sequence[str], ours: Any, repeats: int
                 ) -> dict[tuple[str, str], dict]:
    """`ours(name, network, repeats)` for every workload and network, with progress on stderr."""
    mine: dict[tuple[str, str], dict] = {}
    for network in networks:
        for name in names:
            print(f"ours: {name} on {network} ...", file=sys.stderr, flush=True)
            mine[(name, network)] = ours(name, network, repeats)
    return mine


def write_json(path: str, crypten: dict[str, dict], mine: dict[tuple[str, str], dict]) -> None:
    with open(path, "w") as f:
        json.dump({"machine": machine(), "crypten": crypten,
                   "ours": [{"name": k[0], "network": k[1], **v} for k, v in mine.items()]}, f, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crypten_side", description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build the CrypTen environment and exit")
    parser.add_argument("--only", help="semicolon-separated workload names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--network", choices=("loopback", "wan", "both"), default="loopback")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.setup:
        return setup()
    core = [n for n in WORKLOADS if not WORKLOADS[n][0].startswith("net_")]  # the networks: bench/networks.py
    names = [n for n in core if not args.only or n in args.only.split(";")]
    networks = ("loopback", "wan") if args.network == "both" else (args.network,)
    print("CrypTen ...", file=sys.stderr, flush=True)
    crypten = run_crypten(names, args.repeats)
    ours_only = [n for n, base in SAME_INPUTS.items() if base in names]
    mine = measure_ours(names + ours_only, networks, ours, args.repeats)
    print(f"CrypTen 0.4.1 and ours, same inputs, same run; D step: {D_STEP_LAYERS}, SGD lr {LR}")
    print(report(crypten, mine, networks))
    if args.json:
        write_json(args.json, crypten, mine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
