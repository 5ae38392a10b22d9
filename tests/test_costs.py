"""docs/COSTS.md is a contract: every row is measured here, for several sizes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import torch

import mpcrt
from tests.conftest import run_pair

ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")
ROLES = {"owner": 0, "other": 1, "receiver": 0, "sender": 1}


def documented_costs() -> dict[tuple[str, str], tuple[str, str, str]]:
    text = (Path(__file__).parent.parent / "docs" / "COSTS.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            rows[(m[1], m[2])] = (m[3].strip(), m[4].strip(), m[5].strip())
    return rows


async def measure(party: mpcrt.Party, op: str, shape: tuple[int, ...]):
    """Run `op` alone and return this party's (rounds, bytes sent, bytes received) for it."""
    value = torch.randn(shape)
    if op == "input":
        before = party.stats.as_dict()
        await party.input(value if party.id == 0 else None, src=0)
    else:
        x = await party.input(value if party.id == 0 else None, src=0)
        await x.reveal()  # settle: both parties are past the input's round
        await asyncio.sleep(0)  # and the last frame has left, so `op` starts a frame of its own
        before = party.stats.as_dict()
        if op == "reveal":
            await x.reveal()
        elif op == "reveal_to":
            await x.reveal(to=0)
        elif op == "local":
            _ = (x + x - x * 3 + 1.5) * -2
    after = party.stats.as_dict()
    return tuple(after[k] - before[k] for k in ("rounds", "bytes_sent", "bytes_received"))


@pytest.mark.parametrize("shape", [(1,), (7, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("op", ["input", "reveal", "reveal_to", "local"])
async def test_measured_costs_match_the_table(op, shape):
    table = documented_costs()
    n, d = torch.Size(shape).numel(), len(shape)
    measured = await run_pair(measure, op, shape)
    for (name, role), formulas in table.items():
        if name != op:
            continue
        parties = (0, 1) if role == "each" else (ROLES[role],)
        expected = tuple(eval(f, {"n": n, "d": d}) for f in formulas)  # formulas from our own doc
        for pid in parties:
            assert measured[pid] == expected, f"{op} party {pid} ({role}) shape {shape}"


def test_every_measured_op_is_documented():
    documented = {name for name, _ in documented_costs()}
    assert documented == {"input", "reveal", "reveal_to", "local"}
