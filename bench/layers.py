"""Every layer of LP-GAN's DCGAN, forward and backward, on shares: time, rounds and bytes per layer.

    .venv/bin/python -m bench.layers [--preset dcgan|small] [--batch 64] [--network loopback|lan|wan|mobile|MBPS/RTT]
                                     [--comparison auto|tree|lpgan|dcf] [--frac-bits 16] [--repeats 1]
                                     [--json PATH] [--plot PNG]

D and G of the preset at the given batch, each layer's forward in order, then the backward
passes in reverse (D's from the cross-entropy gradient at its logits, G's from the gradient
D hands back), in two party processes over mutual TLS on loopback (one torch thread each),
all dealer material fetched first (`offline=True`), one warm-up pass, then `--repeats`
timed passes. Each layer is timed by both parties after a barrier; the row shows the median
over the repeats of the slower party, the rounds and bytes party 0 counted in it. `--plot`
draws the per-layer breakdown (time, rounds, MB) as stacked bars (forward and backward).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

import gan
import mpcrt
from bench.arith import in_party_process
from bench.transport import machine, network_spec, pin_to_core, text_table
from gan.loss import bce_logit_grad
from gan.train import TrainConfig, initial_models


def _name(i: int, layer: Any) -> str:
    return f"{i}:{type(layer).__name__}"


async def _barrier(party: mpcrt.Party) -> None:
    await (await party.input(torch.zeros(1) if party.id == 0 else None, src=0)).reveal()


async def _timed(party: mpcrt.Party, rows: list, net: str, direction: str, name: str, step: Any) -> Any:
    await _barrier(party)
    before = (party.stats.rounds, party.stats.bytes_sent)
    start = time.perf_counter()
    out = await step()
    rows.append({"net": net, "layer": name, "direction": direction, "seconds": time.perf_counter() - start,
                 "rounds": party.stats.rounds - before[0], "bytes_sent": party.stats.bytes_sent - before[1]})
    return out


async def program(party: mpcrt.Party, preset: str, batch: int, warmup: int, repeats: int = 1) -> list[list[dict]]:
    """Per timed pass, its rows (one per layer and direction)."""
    if in_party_process():
        pin_to_core(party.id)
    torch.set_num_threads(1)
    cfg = TrainConfig(preset=preset, batch_size=batch)
    p = cfg.preset_()
    d_model, g_model = initial_models(cfg)
    d, g = await gan.secure(d_model, party, src=0), await gan.secure(g_model, party, src=0)
    gen = torch.Generator().manual_seed(1)
    passes: list[list[dict]] = []
    for r in range(warmup + repeats):
        noise = torch.randn(batch, p.nz, 1, 1, generator=gen)
        z = await party.input(noise if party.id == 0 else None, src=0)
        log: list[dict] = []
        x = z
        for i, layer in enumerate(g.layers):
            x = await _timed(party, log, "G", "forward", _name(i, layer), lambda layer=layer, x=x: layer.forward(x))
        images = x
        for i, layer in enumerate(d.layers):
            x = await _timed(party, log, "D", "forward", _name(i, layer), lambda layer=layer, x=x: layer.forward(x))
        grad = await bce_logit_grad(x, 1.0)
        d.zero_grad()
        g.zero_grad()
        for i in reversed(range(len(d.layers) - 1)):  # the last (Sigmoid) is folded into the loss gradient
            layer = d.layers[i]
            grad = await _timed(party, log, "D", "backward", _name(i, layer),
                                lambda layer=layer, grad=grad: layer.backward(grad))
        for i in reversed(range(len(g.layers))):
            layer = g.layers[i]
            grad = await _timed(party, log, "G", "backward", _name(i, layer),
                                lambda layer=layer, grad=grad: layer.backward(grad))
        assert grad.shape == z.shape and images.shape[0] == batch
        if r >= warmup:
            passes.append(log)
    return passes


def measure(preset: str, batch: int, network: str | dict | None, comparison: str, frac_bits: int, repeats: int = 1
            ) -> list[dict]:
    r0, r1 = mpcrt.run_local(program, preset, batch, 1, repeats, transport="tcp", processes=True, offline=True,
                             timeout=900.0, network=network, comparison=comparison, frac_bits=frac_bits)
    return median_rows(r0, r1)


def median_rows(r0: list[list[dict]], r1: list[list[dict]]) -> list[dict]:
    """Per layer and direction: the median over the passes of the slower party's time."""
    rows = []
    for k, row in enumerate(r0[0]):
        seconds = [max(a[k]["seconds"], b[k]["seconds"]) for a, b in zip(r0, r1, strict=True)]
        rows.append({**row, "seconds": statistics.median(seconds)})
    return rows


def table(rows: Sequence[dict]) -> str:
    lines = [[f"{r['net']} {r['layer']}", r["direction"], f"{r['seconds'] * 1e3:.1f}", str(r["rounds"]),
              f"{r['bytes_sent'] / 1e6:.2f}"] for r in rows]
    total = [["total", "", f"{sum(r['seconds'] for r in rows) * 1e3:.1f}", str(sum(r["rounds"] for r in rows)),
              f"{sum(r['bytes_sent'] for r in rows) / 1e6:.2f}"]]
    return text_table(["layer", "pass", "ms", "rounds", "MB sent"], lines + total)


def plot(rows: Sequence[dict], path: str, title: str) -> str:
    """Per layer (G then D), forward and backward stacked: time, rounds, MB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(f"{r['net']} {r['layer']}" for r in rows))
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.45 * len(layers)), 9), sharex=True)
    for ax, (key, scale, label) in zip(axes, (("seconds", 1e3, "ms"), ("rounds", 1, "rounds"),
                                              ("bytes_sent", 1e-6, "MB sent per party"))):
        bottom = [0.0] * len(layers)
        for direction, color in (("forward", "tab:blue"), ("backward", "tab:orange")):
            values = [sum(r[key] * scale for r in rows if f"{r['net']} {r['layer']}" == layer
                          and r["direction"] == direction) for layer in layers]
            ax.bar(layers, values, bottom=bottom, color=color, label=direction)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel(label)
    axes[0].legend()
    axes[0].set_title(title)
    axes[-1].tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--network", default="loopback",
                        help="loopback, lan, wan, mobile or a custom link MBPS/RTT (e.g. 100/20)")
    parser.add_argument("--comparison", default="auto")
    parser.add_argument("--frac-bits", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes (median), after one warm-up")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args(argv)
    try:
        network = network_spec(args.network)
    except ValueError as exc:
        parser.error(str(exc))
    rows = measure(args.preset, args.batch, network, args.comparison,
                   args.frac_bits, args.repeats)
    title = (f"{args.preset} batch {args.batch}, {args.network}, comparison {args.comparison}, "
             f"f = {args.frac_bits}: per layer")
    print(title)
    print(table(rows))
    if args.plot:
        print(f"plot: {plot(rows, args.plot, title)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
