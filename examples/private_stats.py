"""Two parties learn who holds the larger total and the mean and variance of their joint
data, and nothing else: a non-ML application of the bare runtime (mpcrt).

    .venv/bin/python examples/private_stats.py VALUES0.txt VALUES1.txt      # one machine
    # two machines, each with its own file (and a third, the coordinator, as the dealer):
    .venv/bin/python examples/private_stats.py serve --party 0 --listen 0.0.0.0:7000 \
        --peer HOST1:7000 --certs DIR --values VALUES0.txt                     # on host 0
    .venv/bin/python examples/private_stats.py serve --party 1 --listen 0.0.0.0:7000 \
        --peer HOST0:7000 --certs DIR --values VALUES1.txt                     # on host 1
    .venv/bin/python examples/private_stats.py ask HOST0:7000 HOST1:7000 --certs DIR

Each party is an edge server (`mpcrt.server.EdgeServer`) that reads only its own file; the
coordinator (`ask`, the owner role of `lpgan certs`: it deals the correlated randomness and
receives the answers) holds no data. On one machine, the two servers run as two processes
over mutual TLS on loopback. Revealed, to the coordinator only: whether party 0's total is
the larger, the joint mean and variance. The counts are public (shapes of shared inputs).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path

import torch

import mpcrt
from mpcrt import ops, prg
from mpcrt.owner_jobs import start_job
from transports.loop import run as run_loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import local_servers, parse_servers, serve


def read_values(path: str) -> torch.Tensor:
    return torch.tensor([float(line) for line in Path(path).read_text().split()], dtype=torch.float64)


async def program(party: mpcrt.Party, args: dict, values: str) -> None:
    mine = read_values(values)  # this party's file only
    a = await party.input(mine if party.id == 0 else None, src=0)
    b = await party.input(mine if party.id == 1 else None, src=1)
    zero_is_larger = await ops.less_than(b.sum(), a.sum())  # 1 where party 0's total is the larger
    joint = mpcrt.cat([a, b])
    n = joint.shape[0]
    mean = await ops.scale(joint.sum(), 1.0 / n)
    variance = await ops.scale((await ops.square(joint)).sum(), 1.0 / n) - await ops.square(mean)
    for key, share in (("larger", zero_is_larger), ("mean", mean), ("variance", variance)):
        party.owner.send(key, share)
    party.owner.event(n=n)  # public: both parties know both counts


async def ask(servers, certs) -> dict[str, float]:
    counts: dict[int, int] = {}
    job = await start_job(servers, certs, "stats", {}, (prg.new_key(), prg.new_key()), name="private-stats",
                          on_event=lambda i, event: counts.update({i: event["n"]} if "n" in event else {}))
    try:
        answers = {k: float(await job.client.reveal(k)) for k in ("larger", "mean", "variance")}
        while 0 not in counts:
            await asyncio.sleep(0.01)
        return {**answers, "n": counts[0]}
    finally:
        await job.close()


def show(answers: dict[str, float]) -> None:
    print(f"party 0's total is the larger: {bool(answers['larger'])}")
    print(f"joint mean {answers['mean']:.4f}, joint variance {answers['variance']:.4f} (of {answers['n']} values)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        parser = argparse.ArgumentParser(prog="serve")
        parser.add_argument("--values", required=True)
        known, rest = parser.parse_known_args(argv[1:])
        return serve(rest, {"stats": functools.partial(program, values=known.values)})
    if argv and argv[0] == "ask":
        show(run_loop(ask(*parse_servers(argv[1:]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("values0")
    parser.add_argument("values1")
    args = parser.parse_args(argv)
    files = ([f"--values={Path(args.values0).resolve()}"], [f"--values={Path(args.values1).resolve()}"])
    with local_servers(__file__, files) as (servers, certs):
        show(run_loop(ask(servers, certs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
