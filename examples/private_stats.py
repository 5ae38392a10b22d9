"""Two parties learn who holds the larger total and the mean and variance of their joint
data, and nothing else: a non-ML application of the bare runtime (mpcrt).

    .venv/bin/python examples/private_stats.py VALUES0.txt VALUES1.txt [--memory]

Each party reads only its own file (one number per line) inside its own process: the two
parties run as two OS processes over mutual TLS on loopback (`processes=True`), the dealer
as a TLS service in this process; `--memory` runs both in this process instead. Party 0's
values never leave its process except as shares, and the same for party 1. Only three
numbers are revealed: whether party 0's total is the larger, the joint mean and variance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import mpcrt
from mpcrt import ops


def read_values(path: str) -> torch.Tensor:
    return torch.tensor([float(line) for line in Path(path).read_text().split()], dtype=torch.float64)


async def program(party: mpcrt.Party, files: tuple[str, str], sizes: tuple[int, int]) -> dict[str, float]:
    """Sizes are public (each party says how many values it has); values are not."""
    mine = read_values(files[party.id])
    if len(mine) != sizes[party.id]:
        raise ValueError(f"party {party.id} has {len(mine)} values, it announced {sizes[party.id]}")
    a = await party.input(mine if party.id == 0 else None, src=0)
    b = await party.input(mine if party.id == 1 else None, src=1)
    total_a, total_b = a.sum(), b.sum()
    zero_is_larger = await ops.less_than(total_b, total_a)  # 1 where party 0's total is the larger
    joint = mpcrt.cat([a, b])
    n = sizes[0] + sizes[1]
    mean = await ops.scale(joint.sum(), 1.0 / n)
    mean_of_squares = await ops.scale((await ops.square(joint)).sum(), 1.0 / n)
    variance = mean_of_squares - await ops.square(mean)
    larger, m, v = await zero_is_larger.reveal(), await mean.reveal(), await variance.reveal()
    return {"party0_total_is_larger": bool(larger), "mean": float(m), "variance": float(v)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("values0")
    parser.add_argument("values1")
    parser.add_argument("--memory", action="store_true", help="both parties in this process")
    args = parser.parse_args(argv)
    files = (args.values0, args.values1)
    sizes = (len(read_values(args.values0)), len(read_values(args.values1)))  # public: the counts only
    if args.memory:
        result, _ = mpcrt.run_local(program, files, sizes)
    else:
        result, _ = mpcrt.run_local(program, files, sizes, transport="tcp", processes=True)
    print(f"party 0's total is the larger: {result['party0_total_is_larger']}")
    print(f"joint mean {result['mean']:.4f}, joint variance {result['variance']:.4f} (of {sum(sizes)} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
