"""Sigmoid and tanh: max error <= 5e-4 over [-30, 30], saturation beyond, backward vs autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpcrt import ops
from mpcrt.ops.piecewise import fit
from mpcrt.ops.sigmoid import SIGMOID, TANH
from tests.conftest import run_pair


def test_the_fitted_pieces_are_within_budget_in_plain_numpy():
    x = np.linspace(-40, 40, 400_001)
    assert np.abs(SIGMOID(x) - 1 / (1 + np.exp(-x))).max() < 3.5e-4
    assert np.abs(TANH(x) - np.tanh(x)).max() < 2.6e-4


async def squash(party, x: torch.Tensor, g: torch.Tensor, lookup: bool | None):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    s, t = await ops.sigmoid(X, lookup=lookup), await ops.tanh(X, lookup=lookup)
    ds, dt = await ops.sigmoid_backward(G, s), await ops.tanh_backward(G, t)
    return [await v.reveal() for v in (s, t, ds, dt)], party.stats.op("sigmoid").rounds


# the coefficients looked up (7 rounds) or selected (9); on loopback, 20,000 elements select
@pytest.mark.parametrize(("lookup", "rounds_expected"), [(True, 7), (False, 9), (None, 9)])
async def test_accuracy_saturation_and_backward(lookup, rounds_expected):
    ulp = 2.0 ** -16
    near = [b + d for b in (*SIGMOID.breakpoints, *TANH.breakpoints) for d in (-ulp, 0.0, ulp)]
    edges = torch.tensor([*near, 0.0, ulp, -ulp, 1e4, -1e4, 2.0 ** 30, -(2.0 ** 30)])
    x = torch.cat([torch.linspace(-30, 30, 20_001), edges]).double()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = x.clone().requires_grad_()
    s_ref, t_ref = torch.sigmoid(ref), torch.tanh(ref)
    s_val, t_val = s_ref.detach(), t_ref.detach()
    ds_ref = torch.autograd.grad(s_ref, ref, g)[0]
    dt_ref = torch.autograd.grad(t_ref, ref, g)[0]
    for (s, t, ds, dt), rounds in await run_pair(squash, x, g, lookup, timeout=30):
        assert float((s - s_val).abs().max()) <= 5e-4
        assert float((t - t_val).abs().max()) <= 5e-4
        # beyond the pieces the output is exactly the limit
        assert torch.equal(s[-2:], torch.tensor([1.0, 0.0], dtype=torch.float64))
        assert torch.equal(t[-2:], torch.tensor([1.0, -1.0], dtype=torch.float64))
        # backward from the stored output: error of y times |g| (y error <= 5e-4, |y'| bounded)
        assert float(((ds - ds_ref).abs() / (g.abs() + 1)).max()) <= 2e-3
        assert float(((dt - dt_ref).abs() / (g.abs() + 1)).max()) <= 2e-3
        assert rounds == rounds_expected


def test_fit_rejects_nothing_silently():
    pw = fit(np.tanh, (-1.0, 0.0, 1.0), 4, -1.0, 1.0)
    assert pw.degree == 4 and len(pw.coefficients) == 2


async def degree_five(party):
    from mpcrt.ops.piecewise import evaluate

    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    return await evaluate(x, fit(np.tanh, (-1.0, 0.0, 1.0), 5, -1.0, 1.0))


async def test_unsupported_degree_is_a_clear_error():
    results = await run_pair(degree_five, timeout=2)
    assert any(isinstance(r, ValueError) and "degree 1 to 4" in str(r) for r in results)


@pytest.mark.parametrize("method", ["lpgan"])
async def test_the_comparison_method_can_be_chosen(method):
    async def prog(party):
        x = await party.input(torch.linspace(-5, 5, 11) if party.id == 0 else None, src=0)
        return await (await ops.sigmoid(x, method)).reveal()

    for got in await run_pair(prog):
        assert float((got - torch.sigmoid(torch.linspace(-5, 5, 11))).abs().max()) <= 5e-4


async def product_then_squash(party, x: torch.Tensor, w: torch.Tensor, op: str, method: str, fused: bool):
    X = await party.input(x if party.id == 0 else None, src=0)
    W = await party.input(w if party.id == 0 else None, src=0)
    squash = getattr(ops, op)
    before = party.stats.rounds
    if fused:  # the product untruncated at 2f, truncated by the activation
        out = await squash(await ops.mul(X, W, frac_bits=2 * X.frac_bits), method, frac_bits=X.frac_bits)
    else:
        out = await squash(await ops.mul(X, W), method)
    rounds = party.stats.rounds - before
    return await out.reveal(), rounds


@pytest.mark.parametrize("op", ["sigmoid", "tanh"])
@pytest.mark.parametrize("method", ["dcf", "tree"])
async def test_an_untruncated_input_is_truncated_in_the_comparisons_round(op, method):
    """A product handed over before its truncation (gan.nn's Sequential does so): with the
    DCF the segments read it at 2f exactly while it is truncated, a round less; with the
    tree it is truncated first (a wider low part would cost the tree a level). The same
    values as the truncated product's, up to the truncations' rounding."""
    g = torch.Generator().manual_seed(5)
    ulp = 2.0 ** -16
    near = torch.tensor([*SIGMOID.breakpoints, *TANH.breakpoints]) + ulp / 3
    x = torch.cat([torch.linspace(-9, 9, 301), near]).double()
    w = torch.rand(x.shape, generator=g, dtype=torch.float64) * 0.5 + 0.75
    fused = await run_pair(product_then_squash, x, w, op, method, True)
    plain = await run_pair(product_then_squash, x, w, op, method, False)
    want = getattr(torch, op)(x * w)
    for (got, rounds), (truncated_first, rounds_plain) in zip(fused, plain, strict=True):
        assert float((got - want).abs().max()) <= 5e-4
        assert float((got - truncated_first).abs().max()) <= 1e-3
        assert rounds_plain - rounds == (1 if method == "dcf" else 0), (rounds, rounds_plain)
