"""The owner's link to the servers: what `comparison="auto"` picks when it is declared, and what each method costs.

    .venv/bin/python -m bench.owner_link [--n 1000] [--owner mobile] [--network wan] [--repeats 3] [--json PATH]

relu of n elements by the DCF and by the carry tree, both parties and the dealer service on
this machine, the servers' link and the owner's link (the dealer's connections) simulated,
with the material made on demand and fetched ahead of the program (a plan recorded by a dry
run). Per row: the op's time (the slower party), the whole run's (the material fetched ahead
included: what a job pays), each party's dealer bytes, and the method `auto` picks with the
owner's link declared (`mpcrt.ops.policy.choose_method`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

import mpcrt
from bench.transport import text_table
from mpcrt import ops
from mpcrt.offline import record_plan
from mpcrt.ops.policy import choose_method
from transports import resolve_network

METHODS = ("dcf", "tree")


@dataclass
class Row:
    material: str  # "on demand" or "fetched ahead"
    method: str
    op_ms: float
    run_ms: float
    dealer_bytes: tuple[int, int]  # party 0, party 1
    auto_picks: str


async def program(party: mpcrt.Party, n: int, method: str) -> tuple[float, int]:
    x = await party.input(torch.linspace(-1, 1, n) if party.id == 0 else None, src=0)
    before = party.stats.offline.bytes_received
    start = time.perf_counter()
    await ops.relu(x, method=method)
    return time.perf_counter() - start, party.stats.offline.bytes_received - before


def measure(n: int, owner: str, network: str, repeats: int) -> list[Row]:
    rows = []
    for ahead in (False, True):
        declared = SimpleNamespace(network=resolve_network(network), owner_network=resolve_network(owner),
                                   prefetched=ahead)
        picks = choose_method(declared, n)
        for method in METHODS:
            plan = asyncio.run(record_plan(program, n, method, network=network, owner_network=owner)) if ahead else None
            ops_s, runs_s = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                (t0, b0), (t1, b1) = mpcrt.run_local(program, n, method, transport="tcp", network=network,
                                                     dealer="service", owner_network=owner, plan=plan, timeout=120)
                runs_s.append(time.perf_counter() - start)
                ops_s.append(max(t0, t1))
            rows.append(Row("fetched ahead" if ahead else "on demand", method, statistics.median(ops_s) * 1e3,
                            statistics.median(runs_s) * 1e3, (b0, b1), picks))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.owner_link", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="elements (default 1000)")
    parser.add_argument("--owner", default="mobile", help="the owner's link: lan, wan, mobile (default mobile)")
    parser.add_argument("--network", default="wan", help="the servers' link (default wan)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.n, args.owner, args.network, args.repeats)
    print(f"relu of {args.n}: servers {args.network}, owner link {args.owner} (simulated in every row)")
    print(text_table(("material", "method", "op ms", "whole run ms", "dealer bytes p0/p1 (in the op)",
                      "auto picks (declared)"),
                     [(r.material, r.method, f"{r.op_ms:.1f}", f"{r.run_ms:.1f}",
                       f"{r.dealer_bytes[0]}/{r.dealer_bytes[1]}", r.auto_picks) for r in rows]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
