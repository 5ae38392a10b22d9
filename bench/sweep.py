"""One training iteration's time against RTT and bandwidth, per comparison method, as a plot.

    .venv/bin/python -m bench.sweep [--preset small] [--batch 16] [--validate wan] [--json PATH] [--plot PNG]

Measured: the iteration (D step on a real and a fake batch, then G, Adam) on loopback with
each comparison method forced (`tree`, `lpgan`, `dcf`) and with `auto`: its online time,
rounds and bytes (bench/gan.py: two party processes over TLS, dealer material prefetched).
Modelled from those: time(RTT, bandwidth) = loopback time + rounds x RTT / 2 + bytes sent
per party / bandwidth, the lines of the plot (0-100 ms at 400 Mbit/s; 10 Mbit/s-10 Gbit/s at
40 ms). `--validate` measures the same iterations through the simulator on a preset
(`wan`: 400 Mbit/s, 40 ms) for the methods whose run stays short, drawn as points, so the
model is checked against the simulator where it can be. Where two lines cross, the other
method wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from bench import gan as gan_bench
from bench.transport import machine, text_table
from transports import PRESETS

METHODS = ("tree", "lpgan", "dcf", "auto")
RTTS_MS = (0, 1, 2, 5, 10, 20, 40, 60, 80, 100)
BANDWIDTHS_MBPS = (10, 20, 50, 100, 200, 400, 1000, 2000, 5000, 10000)
VALIDATE_MAX_ROUNDS = 2500  # methods whose iteration has more rounds are not run through the simulator


def modelled(r: gan_bench.Result, rtt_s: float, bandwidth_bps: float) -> float:
    return r.median + r.rounds * rtt_s / 2 + r.mb_sent * 8e6 / bandwidth_bps


def plot(measured: dict[str, gan_bench.Result], validation: dict[str, gan_bench.Result], path: str,
         title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wan = PRESETS["wan"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, r in measured.items():
        line, = left.plot(RTTS_MS, [modelled(r, ms / 1e3, wan.bandwidth_bps) for ms in RTTS_MS], label=method)
        right.plot(BANDWIDTHS_MBPS, [modelled(r, wan.rtt_s, mbps * 1e6) for mbps in BANDWIDTHS_MBPS], label=method,
                   color=line.get_color())
        if method in validation:
            left.plot([wan.rtt_s * 1e3], [validation[method].median], "o", color=line.get_color())
            right.plot([wan.bandwidth_bps / 1e6], [validation[method].median], "o", color=line.get_color())
    left.set_xlabel("RTT (ms), at 400 Mbit/s")
    right.set_xlabel("bandwidth (Mbit/s), at 40 ms RTT")
    right.set_xscale("log")
    for ax in (left, right):
        ax.set_ylabel("seconds per iteration")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    left.legend(title="comparison (lines: model, dots: simulated wan)", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--validate", default="wan", help="a preset to check the model on, or 'none'")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG", default="sweep.png")
    args = parser.parse_args(argv)
    w = gan_bench.Workload(f"iteration, {args.preset}, batch {args.batch}", args.preset, args.batch, "iteration",
                           repeats=2)
    measured, validation = {}, {}
    for method in METHODS:
        print(f"{method} on loopback ...", file=sys.stderr, flush=True)
        measured[method] = gan_bench.measure(w, "loopback", comparison=method)
    if args.validate != "none":
        for method, r in measured.items():
            if r.rounds <= VALIDATE_MAX_ROUNDS:
                print(f"{method} on {args.validate} ...", file=sys.stderr, flush=True)
                validation[method] = gan_bench.measure(w, args.validate, comparison=method)
    net = PRESETS.get(args.validate)
    rows = []
    for method, r in measured.items():
        v = validation.get(method)
        model = modelled(r, net.rtt_s, net.bandwidth_bps) if net else None
        rows.append([method, f"{r.median:.2f}", str(r.rounds), f"{r.mb_sent:.0f}",
                     f"{model:.2f}" if model is not None else "-", f"{v.median:.2f}" if v else "-",
                     f"{v.median / model:.2f}" if v and model else "-"])
    print(f"{w.name}: loopback measured, {args.validate} modelled and simulated")
    print(text_table(["comparison", "loopback s", "rounds", "MB sent", f"{args.validate} model s",
                      f"{args.validate} simulated s", "simulated / model"], rows))
    print(f"plot: {plot(measured, validation, args.plot, w.name)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "measured": {m: asdict(r) for m, r in measured.items()},
                       "validation": {m: asdict(r) for m, r in validation.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
