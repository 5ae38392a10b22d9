"""docs/COSTS.md is a contract: every row is measured here, for several shapes."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mpcrt
from mpcrt import BinaryShare, ops
from tests.conftest import run_pair

ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")
ROLES = {"owner": 0, "other": 1, "receiver": 0, "sender": 1, "p0": 0, "p1": 1}


def documented_costs() -> dict[str, dict[int, tuple[str, ...]]]:
    """op -> party id -> (rounds, bytes sent, bytes received, offline) formulas."""
    text = (Path(__file__).parent.parent / "docs" / "COSTS.md").read_text()
    rows: dict[str, dict[int, tuple[str, ...]]] = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            op, role, *formulas = m.groups()
            for pid in ((0, 1) if role == "each" else (ROLES[role],)):
                rows.setdefault(op, {})[pid] = tuple(f.strip() for f in formulas)
    for by_party in rows.values():  # "party 0 rows equal party 1's with offline 0"
        if 0 not in by_party:
            by_party[0] = (*by_party[1][:3], "0")
    return rows


def snapshot(party) -> tuple[int, int, int, int]:
    s = party.stats
    return s.rounds, s.bytes_sent, s.bytes_received, s.offline.bytes_received


async def settle(party, x) -> None:
    """Both parties past earlier rounds, and this party's last frame gone: the op starts fresh."""
    await x.reveal()
    await asyncio.sleep(0)


NONLINEAR = {  # the table's rows are per method: the tree unless the row says otherwise
    "msb_tree": lambda x: ops.msb(x, "tree"), "msb_lpgan": lambda x: ops.msb(x, "lpgan"),
    "ge0": lambda x: ops.is_non_negative(x, "tree"), "ge0_dcf": lambda x: ops.is_non_negative(x, "dcf"),
    "relu": lambda x: ops.relu(x, "tree"), "relu_dcf": lambda x: ops.relu(x, "dcf"),
    "leaky_relu": lambda x: ops.leaky_relu(x, 0.2, "tree"),
    "sigmoid": lambda x: ops.sigmoid(x, "tree", lookup=False),
    "sigmoid_lookup": lambda x: ops.sigmoid(x, "tree", lookup=True),
    "tanh": lambda x: ops.tanh(x, "tree", lookup=False), "tanh_lookup": lambda x: ops.tanh(x, "tree", lookup=True),
    # on a truncation's output (x public up to a mask: the tree reads the mask's bits)
    "sigmoid_masked": lambda x: ops.sigmoid(x, "tree", lookup=False),
    "sigmoid_lookup_masked": lambda x: ops.sigmoid(x, "tree", lookup=True),
    "tanh_masked": lambda x: ops.tanh(x, "tree", lookup=False),
    "tanh_lookup_masked": lambda x: ops.tanh(x, "tree", lookup=True),
    "inv_sqrt_coarse_masked_large": lambda x: ops.inv_sqrt(x, "tree", refine=False),  # the leading one
    "reciprocal": lambda x: ops.reciprocal(x, "tree"),
    "inv_sqrt": lambda x: ops.inv_sqrt(x, "tree"), "sqrt": lambda x: ops.sqrt(x, "tree"),
    "inv_sqrt_large": lambda x: ops.inv_sqrt(x, "tree"), "reciprocal_large": lambda x: ops.reciprocal(x, "tree"),
    "inv_sqrt_coarse": lambda x: ops.inv_sqrt(x, "tree", refine=False),
    "inv_sqrt_coarse_large": lambda x: ops.inv_sqrt(x, "tree", refine=False),
    "exp": lambda x: ops.exp(x, "tree"), "sigmoid_lpgan": lambda x: ops.sigmoid_lpgan(x, "tree"),
}


async def measure(party, op: str, shapes: tuple):
    """Run `op` alone; this party's (rounds, sent, received, offline) and the size variables."""
    shape_x = shapes[0]
    x = await party.input(torch.rand(shape_x) + 0.5 if party.id == 0 else None, src=0)
    y = await party.input(torch.randn(shapes[1]) if party.id == 1 else None, src=1) if len(shapes) > 1 else None
    # truncation outputs, public up to masks the dealer knows
    masked = [await ops.mul(x, 0.5), await ops.mul(x, 0.25)] if op == "mul_masked" else []
    if op == "ge0_dcf_masked":
        masked = [await ops.mul(x - 1, 0.5)]  # signs of both kinds
    if op in NONLINEAR and "_masked" in op:
        masked = [await ops.mul(x, 0.5)]
    await settle(party, x)
    before = snapshot(party)
    variables = {"n": math.prod(shape_x), "d": len(shape_x)}
    if op == "reveal":
        await x.reveal()
    elif op == "reveal_to":
        await x.reveal(to=0)
    elif op == "local":
        _ = (x + x - x * 3 + 1.5) * -2
    elif op in ("mul", "matmul", "conv2d", "conv_transpose2d"):
        out = await getattr(ops, op)(x, y)
        variables.update(m=y.numel(), k=out.numel())
    elif op == "mul_public":
        out = await ops.mul(x, torch.randn(shape_x))
        variables.update(k=out.numel())
    elif op == "square":
        await ops.square(x)
    elif op == "mul_masked":
        await ops.mul(*masked)
    elif op == "ge0_dcf_masked":
        await ops.is_non_negative(masked[0], "dcf")
    elif op == "open":
        await ops.open_masked(x)
    elif op in ("truncate", "truncate_local"):
        await ops.truncate(x, 8, "local" if op == "truncate_local" else "dealer")
    elif op in NONLINEAR:
        n = variables["n"]
        variables.update(w=math.ceil(n / 64))
        await NONLINEAR[op](masked[0] if masked else x)
    elif op == "mul_bit":
        variables.update(w=math.ceil(variables["n"] / 64))
        await ops.mul_bit(x, BinaryShare(party, x.value.reshape(-1)[:variables["w"]]))  # any words as bits
    elif op in ("and", "bit_to_arith"):
        words = BinaryShare(party, x.value.reshape(-1))
        variables.update(w=words.value.numel(), b=64 * words.value.numel() - 5)
        if op == "and":
            await ops.and_(words, words ^ 7)
        else:
            await ops.bit_to_arith(words, variables["b"])
    after = snapshot(party)
    return tuple(a - b for a, b in zip(after, before, strict=True)), variables


async def measure_input(party, shape):
    before = snapshot(party)
    await party.input(torch.randn(shape) if party.id == 0 else None, src=0)
    return tuple(a - b for a, b in zip(snapshot(party), before, strict=True)), {"n": math.prod(shape), "d": len(shape)}


CASES = {
    "input": [((1,),), ((7, 3),), ((2, 3, 4, 5),)],
    "reveal": [((1,),), ((7, 3),)],
    "reveal_to": [((1,),), ((2, 3, 4, 5),)],
    "local": [((7, 3),)],
    "mul": [((5,), (5,)), ((2, 3, 4), (4,))],
    "mul_public": [((6, 2),)],
    "square": [((9,),), ((2, 5),)],
    "mul_masked": [((5,),), ((2, 3),)],
    "ge0_dcf_masked": [((5,),), ((4, 6),)],  # at most 31 elements: the masked key pays on demand
    "open": [((4,),), ((2, 3),)],
    "matmul": [((3, 4), (4, 5)), ((2, 3, 4), (4, 1))],
    "conv2d": [((2, 3, 8, 8), (4, 3, 3, 3))],
    "conv_transpose2d": [((2, 4, 4, 4), (4, 3, 4, 4))],
    "truncate": [((10,),), ((3, 3),)],
    "truncate_local": [((10,),)],
    "and": [((3,),), ((2, 5),)],
    "bit_to_arith": [((1,),), ((4,),)],
    "mul_bit": [((5,),), ((3, 40),)],
    **{op: [((64,),), ((3, 50),)] for op in NONLINEAR if not op.endswith("_large")},
    **{op: [((16384,),), ((2, 9000),)] for op in NONLINEAR if op.endswith("_large")},  # the leading one pays
    "batch_norm": [((2, 3, 4, 4),), ((4, 40, 3, 3),), ((8, 70, 2, 2),)],  # counts 32, 9, 32: COSTS.md
}


async def measure_batch_norm(party, shape):
    c = shape[1]
    x = await party.input(torch.randn(shape) if party.id == 0 else None, src=0)
    stats = [await party.input(v if party.id == 1 else None, src=1) for v in (torch.ones(c), torch.zeros(c),
                                                                                torch.zeros(c), torch.ones(c))]
    await settle(party, x)
    before = snapshot(party)
    await ops.batch_norm(x, stats[2], stats[3], stats[0], stats[1], training=True, method="tree")
    count = math.prod(shape) // c
    power = count & (count - 1) == 0  # the variance's division by count: its last truncation's bits (ops.scale)
    f = party.frac_bits
    variables = {"n": math.prod(shape), "c": c, "wc": math.ceil(c / 64), "np2": int(not power),
                 "vb": f - 12 + count.bit_length() - 1 if power else f + 4}
    return tuple(a - b for a, b in zip(snapshot(party), before, strict=True)), variables


@pytest.mark.parametrize(("op", "shapes"), [(op, s) for op, cases in CASES.items() for s in cases])
async def test_measured_costs_match_the_table(op, shapes):
    table = documented_costs()[op]
    if op == "input":
        outcomes = await run_pair(measure_input, shapes[0])
    elif op == "batch_norm":
        outcomes = await run_pair(measure_batch_norm, shapes[0], timeout=30)
    else:
        outcomes = await run_pair(measure, op, shapes)
    expected = [tuple(eval(f, {}, variables) for f in table[pid]) for pid, (_, variables) in enumerate(outcomes)]
    for pid, ((measured, _), documented) in enumerate(zip(outcomes, expected, strict=True)):
        # online figures per party; the dealer's corrections go to either party (material.corrected_party),
        # so material is checked as both parties' sum
        assert measured[:3] == documented[:3], f"{op} party {pid} shapes {shapes}: measured {measured}, " \
                                               f"documented {documented}"
    material = sum(measured[3] for measured, _ in outcomes)
    assert material == expected[0][3] + expected[1][3], f"{op} shapes {shapes}: material {material}, documented " \
                                                        f"{expected[0][3]} + {expected[1][3]}"


def test_every_documented_op_is_measured():
    assert set(documented_costs()) == set(CASES)


def test_conv_shapes_used_above_are_real_convolutions():
    assert F.conv2d(torch.zeros(2, 3, 8, 8), torch.zeros(4, 3, 3, 3)).shape == (2, 4, 6, 6)
    assert mpcrt.ops.conv_transpose2d is not None
