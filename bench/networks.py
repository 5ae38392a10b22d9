"""LP-GAN's comparison networks on shares: inference per image and a training step, CrypTen beside.

    .venv/bin/python -m bench.networks [--network loopback|wan|both] [--repeats 3] [--no-crypten] [--json PATH]

"SecureML", "CryptoNets" and "MiniONN" (gan.models.comparison_network) on 1x28x28 inputs:
inference at batch 1 and 64 (time per image = time / batch), and one SGD step on the
squared error against one-hot labels at batch 64. Ours: two party processes over mutual
TLS on loopback (`wan`: through the simulator), one torch thread each, dealer material
fetched first, the model and the input shared by party 0, a warm-up, the median of the
repeats, the slower party. CrypTen 0.4.1 runs the same workloads in the same run
(bench/crypten_runner.py, in the environment `python -m bench.crypten_side --setup`
builds); its `wan` time is modelled (bench/crypten_side.py). `--no-crypten` skips it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

import gan
import mpcrt
from bench import crypten_side
from bench.crypten_runner import LR, WORKLOADS, make_inputs
from bench.transport import text_table
from gan import optim
from gan.models import COMPARISON_NETWORKS, comparison_network
from gan.nn import functional as F

NAMES = [n for n in WORKLOADS if n.split()[0] in COMPARISON_NETWORKS]


async def program(party: mpcrt.Party, name: str, warmup: int, repeats: int) -> dict[str, Any]:
    op, (shape,), kind = WORKLOADS[name]
    what, net = op.split(":")
    labels = torch.nn.functional.one_hot(torch.arange(shape[0]) % 10, 10).float()

    async def prepare(i: int):
        torch.manual_seed(0)
        model = await gan.secure(comparison_network(net), party, src=0)
        return model, await party.input(make_inputs(kind, shape, 100 * i).float() if party.id == 0 else None, src=0)

    async def step(state) -> None:
        model, x = state
        out = await model.forward(x)
        if what == "net_train":
            model.zero_grad()
            await model.backward(await F.scale(out - labels, 2.0 / shape[0]))
            await optim.SGD(model.parameters(), LR, 0.0).step()

    return await crypten_side.timed_repeats(party, warmup, repeats, prepare, step)


def ours(name: str, network: str, repeats: int) -> dict[str, Any]:
    r0, r1 = mpcrt.run_local(program, name, 1, repeats, transport="tcp", processes=True, offline=True,
                             timeout=600.0, network="wan" if network == "wan" else None)
    return crypten_side.summary(r0, r1, 1 + repeats)


def per_image(name: str) -> int:
    return WORKLOADS[name][1][0][0] if "inference" in name else 1


def report(crypten: dict[str, dict], mine: dict[tuple[str, str], dict]) -> str:
    rows = []
    for (name, network), o in mine.items():
        c = crypten.get(name)
        theirs = None if c is None else (c["seconds"] if network == "loopback" else crypten_side.crypten_wan(c))
        unit = per_image(name)
        rows.append([name, network, f"{o['seconds'] / unit * 1e3:.2f}", str(o["rounds"]),
                     f"{o['mb']:.2f} (+{o['offline_mb']:.2f})",
                     "-" if theirs is None else f"{theirs / unit * 1e3:.2f}" + (" (model)" if network == "wan" else ""),
                     "-" if c is None else str(c["rounds"]), "-" if c is None else f"{c['mb']:.2f}",
                     "-" if theirs is None else f"{o['seconds'] / theirs:.3f}"])
    return text_table(["workload", "network", "ours ms (per image)", "rounds", "MB sent+recv (+offline)",
                       "CrypTen ms (per image)", "CrypTen rounds", "CrypTen MB sent+recv", "ours / CrypTen"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.networks", description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("loopback", "wan", "both"), default="loopback")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-crypten", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    networks = ("loopback", "wan") if args.network == "both" else (args.network,)
    crypten = {} if args.no_crypten else crypten_side.run_crypten(NAMES, args.repeats)
    mine = crypten_side.measure_ours(NAMES, networks, ours, args.repeats)
    print(report(crypten, mine))
    if args.json:
        crypten_side.write_json(args.json, crypten, mine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
