"""Batch norm forward and backward against torch autograd on DCGAN activation shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mpcrt
from mpcrt import ops
from tests.conftest import run_pair


async def bn_train(party, x, gamma, beta, g, rm, rv, handed: bool = False, output_known: bool = True):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 0 else None, src=0)
    if handed:  # the gradient handed over untruncated (16 more bits), as a LeakyReLU's backward does
        G = G.lift(16)
    W = await party.input(gamma if party.id == 1 else None, src=1)
    B = await party.input(beta if party.id == 1 else None, src=1)
    RM = await party.input(rm if party.id == 1 else None, src=1)
    RV = await party.input(rv if party.id == 1 else None, src=1)
    done = await ops.batch_norm_with_context(X, RM, RV, W, B, training=True, momentum=0.1)
    y, ctx = done.output, done.context
    assert ctx.output is y and y.opening is not None  # the forward truncated y: masked
    if not output_known:  # as when y went untruncated to a layer that does not keep it truncated
        ctx.output = None
    rounds = party.stats.rounds
    dx, dw, db = await ops.batch_norm_backward(G, ctx, 16 if handed else None)
    rounds = party.stats.rounds - rounds
    assert all(t.frac_bits == 16 for t in (dx, dw, db))
    opened = [await t.reveal() for t in (y, dx, dw, db, RM, RV)]
    return opened, rounds


def reference(x, gamma, beta, g, rm, rv):
    x, gamma, beta = (t.clone().requires_grad_() for t in (x, gamma, beta))
    rm, rv = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    y.backward(g)
    return [y.detach(), x.grad, gamma.grad, beta.grad, rm, rv]


@pytest.mark.parametrize(("shape", "handed", "output_known"),
                         [((2, 8, 4, 4), False, True), ((2, 8, 4, 4), True, True), ((16, 64, 8, 8), False, True),
                          ((16, 64, 8, 8), True, True), ((64, 32, 6, 6), False, True),
                          ((64, 16, 16, 16), False, True), ((2, 8, 4, 4), True, False),
                          ((16, 64, 8, 8), False, False)])
async def test_training_forward_and_backward_match_autograd(shape, handed, output_known):
    """handed: the gradient comes untruncated and is truncated in its opening's round, the
    backward's rounds unchanged. output_known: the backward reads the forward's masked
    output, k (x - mean) = k1 (y - beta), in 5 rounds; without it, 6."""
    gen = torch.Generator().manual_seed(sum(shape))
    c = shape[1]
    # DCGAN-like activations: per-channel means and spreads from small to large
    spread = torch.logspace(-1, 1, c, dtype=torch.float64).reshape(1, c, 1, 1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * spread + torch.randn(1, c, 1, 1, generator=gen)
    gamma = 1 + 0.2 * torch.randn(c, generator=gen, dtype=torch.float64)
    beta = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    # compare on the inputs the parties hold (fixed point): with 1/std up to 10, the rounding
    # of the inputs alone moves a 16k-term weight gradient by about 1e-3
    held = [torch.round(t * 2 ** 16) / 2 ** 16 for t in (x, gamma, beta, g, rm, rv)]
    want = reference(*held)
    for got, rounds in await run_pair(bn_train, x, gamma, beta, g, rm, rv, handed, output_known, timeout=60):
        assert rounds == (5 if output_known else 6)
        for name, a, b in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"), got, want, strict=True):
            assert a.shape == b.shape, name
            assert float((a - b).abs().max()) <= 1e-3, name


async def bn_eval(party, x, rm, rv, shared_stats: bool, handed: bool = False):
    X = await party.input(x if party.id == 0 else None, src=0)
    if shared_stats:
        rm = await party.input(rm if party.id == 1 else None, src=1)
        rv = await party.input(rv if party.id == 1 else None, src=1)
    done = await ops.batch_norm_with_context(X, rm, rv, training=False)
    y, ctx = done.output, done.context
    dx, dw, _ = await (ops.batch_norm_backward(X.lift(16), ctx, 16) if handed else ops.batch_norm_backward(X, ctx))
    assert dx.frac_bits == 16
    return await y.reveal(), await dx.reveal(), dw


@pytest.mark.parametrize(("shared_stats", "handed"), [(True, False), (False, False), (True, True)])
async def test_inference_with_running_statistics(shared_stats, handed):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    rm = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    rv = torch.tensor([0.01, 4.0, 100.0], dtype=torch.float64)
    if shared_stats:  # shared statistics are fixed point: 0.01 is 655 units of 2^-16
        rm, rv = torch.round(rm * 2 ** 16) / 2 ** 16, torch.round(rv * 2 ** 16) / 2 ** 16
    want = F.batch_norm(x, rm, rv, training=False, eps=1e-5)
    for y, dx, dw in await run_pair(bn_eval, x, rm, rv, shared_stats, handed, timeout=30):
        assert float((y - want).abs().max()) <= 1e-3
        assert float((dx - x * (rv.reshape(1, 3, 1, 1) + 1e-5).rsqrt()).abs().max()) <= 1e-3
        assert dw is None


async def missing_stats(party):
    x = await party.input(torch.ones(2, 2, 2, 2) if party.id == 0 else None, src=0)
    return await ops.batch_norm(x, training=False)


async def test_inference_without_statistics_is_a_clear_error():
    results = await run_pair(missing_stats, timeout=2)
    assert any(isinstance(r, ValueError) and "running_mean and running_var" in str(r) for r in results)


def test_public_running_stats_in_training_are_refused():
    async def prog(party):
        x = await party.input(torch.ones(2, 2, 2, 2) if party.id == 0 else None, src=0)
        return await ops.batch_norm(x, torch.zeros(2), torch.ones(2), training=True)

    with pytest.raises(TypeError, match="must be shares"):
        mpcrt.run_local(prog)


async def bn_untruncated(party, x, gamma, beta, g, handed: bool):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 0 else None, src=0)
    W = await party.input(gamma if party.id == 1 else None, src=1)
    B = await party.input(beta if party.id == 1 else None, src=1)
    await B.reveal()  # the inputs' frames gone: the count starts clean
    rounds = party.stats.rounds
    if handed:  # as a convolution hands its output over: 16 more bits, standing for 16
        done = await ops.batch_norm_with_context(X.lift(16), None, None, W, B, training=True, x_frac_bits=16)
    else:
        done = await ops.batch_norm_with_context(X, None, None, W, B, training=True)
    rounds = party.stats.rounds - rounds
    dx, dw, db = await ops.batch_norm_backward(G, done.context)
    return [await t.reveal() for t in (done.output, dx, dw, db)], rounds


@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (16, 64, 8, 8), (64, 32, 6, 6)])
async def test_an_untruncated_input_is_truncated_in_the_means_round(shape):
    """A product's output handed over untruncated (x_frac_bits): with a power-of-two count per
    channel it is truncated in the means' round, the means read off its exact sum, so the
    forward takes the rounds of a truncated input (a product that truncated first would take
    one more); otherwise (2304 per channel) it is truncated first, one round more. Both
    match autograd."""
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    c = shape[1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * torch.logspace(-1, 1, c, dtype=torch.float64).reshape(
        1, c, 1, 1) + torch.randn(1, c, 1, 1, generator=gen)
    gamma = 1 + 0.2 * torch.randn(c, generator=gen, dtype=torch.float64)
    beta = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1
    held = [torch.round(t * 2 ** 16) / 2 ** 16 for t in (x, gamma, beta, g)]
    want = reference(*held, torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64))[:4]
    handed = await run_pair(bn_untruncated, x, gamma, beta, g, True, timeout=60)
    plain = await run_pair(bn_untruncated, x, gamma, beta, g, False, timeout=60)
    power_of_two = (shape[0] * shape[2] * shape[3]) & (shape[0] * shape[2] * shape[3] - 1) == 0
    for (got, rounds), (_, plain_rounds) in zip(handed, plain, strict=True):
        assert rounds == plain_rounds + (0 if power_of_two else 1)
        for name, a, b in zip(("y", "dx", "dgamma", "dbeta"), got, want, strict=True):
            assert float((a - b).abs().max()) <= 1e-3, name
