"""Piecewise polynomials: the lookup path (degree <= 2 with the tree) against plain numpy,
on fresh, masked (a truncation's output, two mask variants) and scaled inputs, other
degrees and scales, and bit for bit against the segment-selection path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mpcrt import ops
from mpcrt.ops.piecewise import _lookup_bits, _lookup_fits, evaluate, fit
from mpcrt.ops.sigmoid import SIGMOID, TANH
from tests.conftest import run_pair

ULP = 2.0 ** -16
# a function with pieces of every sign and size, breakpoints not on a power-of-two grid
WAVE = fit(lambda x: 3 * np.sin(x) + 0.5 * x, (-6.0, -4.5, -2.2, -1.0, 0.3, 1.7, 2.9, 5.0), 2, -7.5, 6.0)
LINEAR = fit(np.tanh, (-3.0, -1.0, 0.0, 1.0, 3.0), 1, -1.0, 1.0)


def _inputs(pw, count: int = 4001) -> torch.Tensor:
    lo, hi = pw.breakpoints[0], pw.breakpoints[-1]
    near = [b + d for b in pw.breakpoints for d in (-ULP, 0.0, ULP)]
    return torch.cat([torch.linspace(lo - 2, hi + 2, count), torch.tensor([*near, 0.0, 1e4, -1e4, 2.0 ** 30])]).double()


def _expected(pw, x: torch.Tensor) -> torch.Tensor:
    """The pieces at x and breakpoints rounded to f bits (as the shares hold them: at a
    breakpoint the rounding may change the piece)."""
    rounded = dataclasses.replace(pw, breakpoints=tuple(round(b / ULP) * ULP for b in pw.breakpoints))
    return torch.from_numpy(rounded((torch.round(x / ULP) * ULP).numpy()))


async def _fresh(party, x, pw):
    X = await party.input(x if party.id == 0 else None, src=0)
    y = await evaluate(X, pw, "tree", lookup=True)
    return await y.reveal(), party.stats.op("piecewise").rounds


@pytest.mark.parametrize(("pw", "tree_rounds"), [(SIGMOID, 5), (WAVE, 5), (LINEAR, 5)],
                         ids=["sigmoid", "wave", "degree1"])
async def test_lookup_matches_the_pieces_and_saturates(pw, tree_rounds):
    x = _inputs(pw)
    for got, rounds in await run_pair(_fresh, x, pw, timeout=30):
        # the pieces' value at x rounded to f bits, within the one truncation's unit (the
        # coefficients' rounding, at 2f + 26 bits and more, adds under 2^-20 here)
        assert float((got - _expected(pw, x)).abs().max()) <= 1.1 * ULP
        assert torch.equal(got[-3:], torch.tensor([pw.right, pw.left, pw.right], dtype=torch.float64))
        assert rounds == tree_rounds + 2  # the index's opening and the truncation


async def _masked_and_scaled(party, a, b, pw):
    A = await party.input(a if party.id == 0 else None, src=0)
    B = await party.input(b if party.id == 1 else None, src=1)
    product = await ops.mul(A, B)  # a truncation's output: masked, with two mask variants
    assert product.opening is not None and product.opening.variant is not None
    tripled = product * 3  # the mask's factor becomes 3
    assert tripled.opening is not None and tripled.opening.factor == 3
    outs = [await evaluate(v, pw, "tree", lookup=True) for v in (product, tripled)]
    return [await o.reveal() for o in outs]


async def test_lookup_on_masked_inputs_picks_the_mask_variant_and_factor():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(3, 700, generator=g, dtype=torch.float64) - 0.5) * 6
    b = (torch.rand(3, 700, generator=g, dtype=torch.float64) - 0.5) * 3
    x = torch.round(torch.round(a / ULP) * ULP * torch.round(b / ULP) * ULP / ULP) * ULP
    for once, tripled in await run_pair(_masked_and_scaled, a, b, WAVE, timeout=30):
        assert once.shape == (3, 700)
        assert float((once - _expected(WAVE, x.flatten()).reshape(3, 700)).abs().max()) <= 0.01
        assert float((tripled - _expected(WAVE, 3 * x.flatten()).reshape(3, 700)).abs().max()) <= 0.02


async def _every_path(party, x, lookup, method):
    X = await party.input(x if party.id == 0 else None, src=0)
    y = await evaluate(X, SIGMOID, method, lookup=lookup)
    after = await ops.mul(y, X)  # the steps after it: their ids, and so their material, alike
    from_masked = await evaluate(await ops.mul(X, 0.5), WAVE, method, lookup=lookup)  # two mask variants
    return [await v.reveal() for v in (y, after, from_masked)]


async def test_the_lookup_and_the_selection_give_the_same_bits():
    """Whichever way (and comparison method) the coefficients are found, with the same
    seeds: so material on demand, prefetched or streamed, where the choice differs, cannot
    change a result."""
    x = torch.cat([_inputs(SIGMOID, 2001), torch.randn(1000, generator=torch.Generator().manual_seed(2)) * 4])
    seeds = (b"s" * 16, b"t" * 16)
    ways = [(True, "tree"), (False, "tree"), (False, "lpgan"), (None, "dcf")]
    results = [(await run_pair(_every_path, x, lookup, method, timeout=30, seeds=seeds))[0] for lookup, method in ways]
    for got in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(got, results[0], strict=True))
    assert float((results[0][0] - _expected(SIGMOID, x)).abs().max()) <= 1.1 * ULP


async def _forced_lookup(party, method):
    X = await party.input(torch.linspace(-3, 3, 8) if party.id == 0 else None, src=0)
    return await evaluate(X, SIGMOID, method, lookup=True)


@pytest.mark.parametrize(("method", "options"), [("lpgan", {}), ("tree", {"frac_bits": 20})])
async def test_a_lookup_asked_for_where_it_cannot_run_is_a_clear_error(method, options):
    outcomes = await run_pair(_forced_lookup, method, party_options=[options] * 2)
    assert any(isinstance(o, ValueError) and "lookup=None" in str(o) for o in outcomes)


def test_the_lookup_coefficient_precision_shrinks_with_f_and_the_pieces_size():
    assert _lookup_bits(SIGMOID, 16) == 61 - 32 - 1  # pieces up to 1.0003, with 1% to spare
    assert _lookup_bits(WAVE, 16) == 61 - 32 - 2  # pieces up to |3.8| (the outer constants do not count)
    # the lookup path where the coefficients' rounding, amplified by x^2, stays under half a unit
    assert _lookup_fits(SIGMOID, 16) and _lookup_fits(TANH, 16) and _lookup_fits(WAVE, 16)
    assert not _lookup_fits(SIGMOID, 20)  # c2 at 20 bits, times 8^2: 2^-15, over 2^-21
    assert not _lookup_fits(SIGMOID, 24)


async def _two_breakpoints(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    return await (await evaluate(X, TINY, "tree", lookup=True)).reveal()


# two breakpoints (one inner segment, a 1-bit index) two and six units above 0 (the tree's
# shared low part is one bit wide)
TINY = fit(lambda x: 1000 * x, (2 * ULP, 6 * ULP), 1, -1.0, 1.0)


async def test_lookup_with_one_inner_segment():
    x = torch.tensor([-5.0, -ULP, 0.0, ULP, 2 * ULP, 3 * ULP, 5 * ULP, 6 * ULP, 7 * ULP, 5.0], dtype=torch.float64)
    for got in await run_pair(_two_breakpoints, x):
        assert float((got - _expected(TINY, x)).abs().max()) <= 1.1 * ULP
        assert got[0] == -1.0 and got[-1] == 1.0 and abs(float(got[5]) - 3000 * ULP) <= 1.1 * ULP


@pytest.mark.parametrize("frac_bits", [20, 24])
async def test_other_scales_stay_within_the_error_budget(frac_bits):
    x = torch.linspace(-12, 12, 3001, dtype=torch.float64)

    async def prog(party):
        X = await party.input(x if party.id == 0 else None, src=0)
        return await (await ops.sigmoid(X, "tree")).reveal()

    for got in await run_pair(prog, timeout=30, party_options=[{"frac_bits": frac_bits}] * 2):
        assert float((got - torch.sigmoid(x)).abs().max()) <= 5e-4
