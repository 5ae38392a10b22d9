"""Optimizers against torch.optim: exact on the plaintext backend, close on shares."""

from __future__ import annotations

import asyncio

import pytest
import torch

from gan import optim
from gan.nn import Parameter
from tests.conftest import run_pair


def torch_steps(kind: str, w0: torch.Tensor, grads: list[torch.Tensor], **kw) -> torch.Tensor:
    w = w0.clone().requires_grad_()
    opt = torch.optim.SGD([w], **kw) if kind == "sgd" else torch.optim.Adam([w], **kw)
    for g in grads:
        opt.zero_grad()
        w.grad = g.clone()
        opt.step()
    return w.detach()


async def our_steps(kind: str, w0, grads, **kw):
    p = Parameter(w0)
    opt = optim.SGD([p], **kw) if kind == "sgd" else optim.Adam([p], **kw)
    for g in grads:
        p.grad = g
        await opt.step()
    return p.data


CASES = [("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}),
         ("adam", {"lr": 1e-2}), ("adam", {"lr": 2e-4, "betas": (0.5, 0.999)})]


def gradients(steps: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(50, generator=g, dtype=torch.float64)
    return w0, [torch.randn(50, generator=g, dtype=torch.float64) * 0.05 for _ in range(steps)]


@pytest.mark.parametrize(("kind", "kw"), CASES)
def test_plaintext_backend_is_torch(kind, kw):
    w0, grads = gradients()
    ours = asyncio.run(our_steps(kind, w0, grads, **kw))
    # Adam on the plaintext backend uses 1/sqrt(v + eps^2) for 1/(sqrt(v) + eps): within 1e-6
    assert torch.allclose(ours, torch_steps(kind, w0, grads, **kw), atol=1e-6)


async def secure_steps(party, kind, w0, grads, kw):
    w = await party.input(w0 if party.id == 0 else None, src=0)
    shared = [await party.input(g if party.id == 1 else None, src=1) for g in grads]
    return await (await our_steps(kind, w, shared, **kw)).reveal()


@pytest.mark.parametrize(("kind", "kw"), CASES)
async def test_secure_updates_follow_torch(kind, kw):
    w0, grads = gradients()
    expected = torch_steps(kind, w0, grads, **kw)
    moved = (expected - w0).abs().max()
    for got in await run_pair(secure_steps, kind, w0, grads, kw, timeout=30):
        # within 2% of the largest move, plus a few units of 2^-16
        assert float((got - expected).abs().max()) <= 0.02 * float(moved) + 8 * 2 ** -16


def test_step_without_gradients_is_a_clear_error():
    opt = optim.SGD([Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(RuntimeError, match="run backward before step"):
        asyncio.run(opt.step())
    with pytest.raises(ValueError, match="no parameters"):
        optim.Adam([])
