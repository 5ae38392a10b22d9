"""Reciprocal, inverse square root, square root: within 1e-3 relative or 4 units of 2^-f
(whichever is larger) of the function at the input the parties hold, over the documented
ranges; clipped outside them."""

from __future__ import annotations

import pytest
import torch

from mpcrt import ops
from tests.conftest import run_pair
from transports import PRESETS

WAN = [{"network": PRESETS["wan"]}] * 2  # declared only (no delay here): the leading one pays there

ULP = 2.0 ** -16


def q(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x / ULP) * ULP


def budget_used(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got - want).abs() / torch.maximum(want.abs() * 1e-3, torch.full_like(want, 4 * ULP))).max())


async def roots(party, a: torch.Tensor, b: torch.Tensor):
    A = await party.input(a if party.id == 0 else None, src=0)
    B = await party.input(b if party.id == 1 else None, src=1)
    out = [await ops.reciprocal(A, "tree"), await ops.inv_sqrt(B, "tree"), await ops.sqrt(B, "tree")]
    return [await v.reveal() for v in out], {k: party.stats.op(k).rounds for k in ("reciprocal", "inv_sqrt", "sqrt")}


# the threshold tree; the leading one: the reciprocal's two Newton steps take a round more than the roots' quartic
@pytest.mark.parametrize(("options", "expected_rounds"), [(None, (13, 12)), (WAN, (12, 11))])
async def test_accuracy_over_the_documented_ranges(options, expected_rounds):
    a = torch.cat([torch.logspace(-2, 3, 4001, dtype=torch.float64), torch.tensor([1e-2, 1e3, 1.0, 0.5, 2.0])])
    b = torch.cat([torch.logspace(-4, 4, 4001, dtype=torch.float64), torch.tensor([1e-4, 1e4, 1.0, 0.25, 4.0])])
    for (r, i, s), rounds in await run_pair(roots, a, b, timeout=30, party_options=options):
        assert budget_used(r, 1 / q(a)) <= 1
        assert budget_used(i, q(b).rsqrt()) <= 1
        assert budget_used(s, q(b).sqrt()) <= 1
        reciprocal_rounds, root_rounds = expected_rounds
        assert rounds == {"reciprocal": reciprocal_rounds, "inv_sqrt": root_rounds, "sqrt": root_rounds}


async def test_inputs_outside_the_range_are_clipped_not_wrapped():
    a = torch.tensor([1e-4, 2.0 ** -7, 5000.0, 2.0 ** 11, -3.0, 0.0], dtype=torch.float64)
    b = torch.tensor([1e-6, 2.0 ** -14, 1e6, 2.0 ** 14, -3.0, 0.0], dtype=torch.float64)
    for (r, i, s), _ in await run_pair(roots, a, b, timeout=30):
        # below -> the lower end, above -> the upper end; negatives and 0 count as below
        assert budget_used(r, torch.tensor([128.0, 128.0, 2.0 ** -11, 2.0 ** -11, 128.0, 128.0])) <= 1
        assert budget_used(i, torch.tensor([128.0, 128.0, 2.0 ** -7, 2.0 ** -7, 128.0, 128.0])) <= 1
        assert budget_used(s, torch.tensor([2.0 ** -7, 2.0 ** -7, 2.0 ** 7, 2.0 ** 7, 2.0 ** -7, 2.0 ** -7])) <= 1


async def inv_sqrt_cost(party, a: torch.Tensor):
    A = await party.input(a if party.id == 0 else None, src=0)
    await A.reveal()  # both parties past the input: the op starts fresh
    before = (party.stats.rounds, party.stats.bytes_sent, party.stats.bytes_received)
    await ops.inv_sqrt(A, "tree")
    return tuple(x - y for x, y in zip((party.stats.rounds, party.stats.bytes_sent, party.stats.bytes_received),
                                       before, strict=True))


async def test_inv_sqrt_costs_11_rounds_and_2840_bytes_a_word_each_way():
    n = 100  # 2 words of packed bits
    for cost in await run_pair(inv_sqrt_cost, torch.rand(n, dtype=torch.float64) * 9.9 + 0.1, party_options=WAN):
        # the range conversion's one-hot by the leading one (ops.leading: 355 bit rows each
        # way, 6 rounds), then the product and the quartic (56 bytes an element, 5 rounds)
        assert cost == (11, 2840 * 2 + 56 * n, 2840 * 2 + 56 * n)


async def coarse_inv_sqrt(party, b: torch.Tensor):
    B = await party.input(b if party.id == 1 else None, src=1)
    await B.reveal()
    before = (party.stats.rounds, party.stats.bytes_sent, party.stats.offline.bytes_received)
    out = await ops.inv_sqrt(B, "tree", refine=False)
    after = (party.stats.rounds, party.stats.bytes_sent, party.stats.offline.bytes_received)
    return await out.reveal(), tuple(x - y for x, y in zip(after, before, strict=True))


@pytest.mark.parametrize("options", [None, WAN])  # the threshold tree; the leading one
async def test_inv_sqrt_without_its_refinement_is_within_its_start_and_a_round_shorter(options):
    """refine=False: the quadratic start instead of the quartic, relative error 3.2e-3 plus
    rounding, within 4e-3 (Adam's denominator needs no more), a round fewer than inv_sqrt's
    12 (11 by the leading one)."""
    b = torch.cat([torch.logspace(-4, 4, 4001, dtype=torch.float64), torch.tensor([1e-4, 1e4, 1.0, 0.25, 4.0])])
    want = q(b).rsqrt()
    for got, (rounds, _, _) in await run_pair(coarse_inv_sqrt, b, timeout=30, party_options=options):
        error = ((got - want).abs() / torch.maximum(want * 4e-3, torch.full_like(want, 4 * ULP))).max()
        assert float(error) <= 1
        assert float(((got - want).abs() / want).max()) > 1e-3  # not refined (the test can fail)
        assert rounds == (11 if options is None else 10)


async def roots_by_the_dcf(party, b: torch.Tensor):
    B = await party.input(b if party.id == 1 else None, src=1)
    await B.reveal()
    rounds = party.stats.rounds
    out = [await ops.inv_sqrt(B, "dcf"), await ops.sqrt(B, "dcf")]
    rounds = party.stats.rounds - rounds
    return [await v.reveal() for v in out], rounds


async def test_by_the_dcf_the_roots_place_x_among_the_half_powers_too():
    """The DCF's one key serves the half powers of two as well, so the quartic runs on
    [2^-1/2, 1): relative error 2.4e-6 (sqrt 2.7e-7) plus rounding (m at 16 bits: up to 2.2e-5
    seen), within 4e-5 (the octaves' 7.4e-5 would not be), in 6 rounds each: the DCF's opening, the product's, then the
    truncations of m, m^2, the quartic and the scaled result."""
    b = torch.cat([torch.logspace(-2, 4, 2001, dtype=torch.float64), torch.tensor([1e-2, 1e4, 1.0, 0.5, 2.0])])
    for (inverse, root), rounds in await run_pair(roots_by_the_dcf, b, timeout=30):
        for got, want in ((inverse, q(b).rsqrt()), (root, q(b).sqrt())):
            error = (got - want).abs() / torch.maximum(want * 4e-5, torch.full_like(want, 4 * ULP))
            assert float(error.max()) <= 1
        assert rounds == 2 * 6
