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


def several_parameters(steps: int = 3) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """A model's worth of parameters of different shapes, gradients of different magnitudes."""
    g = torch.Generator().manual_seed(2)
    shapes = [(4, 3, 2, 2), (7,), (3, 5)]
    w0 = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) * scale for s, scale in zip(shapes, (0.05, 0.3, 2e-3))]
             for _ in range(steps)]
    return w0, grads


def torch_adam_several(w0, grads, **kw) -> list[torch.Tensor]:
    ws = [w.clone().requires_grad_() for w in w0]
    opt = torch.optim.Adam(ws, **kw)
    for step in grads:
        for w, grad in zip(ws, step):
            w.grad = grad.clone()
        opt.step()
    return [w.detach() for w in ws]


async def secure_adam_several(party, w0, grads, kw):
    params = [Parameter(await party.input(w if party.id == 0 else None, src=0)) for w in w0]
    opt = optim.Adam(params, **kw)
    for step in grads:
        for p, grad in zip(params, step):
            p.grad = await party.input(grad if party.id == 1 else None, src=1)
        await opt.step()
    state = opt.state()
    assert sorted(state["m"]) == [0, 1, 2] and [tuple(v.shape) for v in state["v"].values()] == [
        tuple(w.shape) for w in w0]
    return [await p.data.reveal() for p in params]


async def test_adam_updates_a_model_of_several_tensors_as_torch():
    """The whole model is one flat buffer inside Adam: each tensor still gets its own
    torch.optim.Adam update (pieces in the right places, shapes kept)."""
    w0, grads = several_parameters()
    kw = {"lr": 1e-2, "betas": (0.5, 0.999)}
    expected = torch_adam_several(w0, grads, **kw)
    plain = await our_several_plain(w0, grads, kw)
    for got, want in zip(plain, expected):
        assert torch.allclose(got, want, atol=1e-6)
    for result in await run_pair(secure_adam_several, w0, grads, kw, timeout=30):
        for got, want, start in zip(result, expected, w0):
            moved = float((want - start).abs().max())
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= 0.02 * moved + 8 * 2 ** -16


async def our_several_plain(w0, grads, kw):
    params = [Parameter(w.clone()) for w in w0]
    opt = optim.Adam(params, **kw)
    for step in grads:
        for p, grad in zip(params, step):
            p.grad = grad
        await opt.step()
    return [p.data for p in params]


def test_adam_state_round_trips_and_checks_shapes():
    params = [Parameter(torch.zeros(2, 3)), Parameter(torch.zeros(4))]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p.data)
    asyncio.run(opt.step())
    state = opt.state()
    again = optim.Adam(params, lr=0.1)
    again.load_state(state)
    assert all(torch.equal(a, b) for a, b in zip(again.state()["v"].values(), state["v"].values()))
    state["m"][1] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"m\[1\] has shape \(5,\), its parameter \(4,\)"):
        again.load_state(state)


async def test_adam_follows_torch_with_large_gradients_and_a_short_second_moment():
    """Gradients of 0.5 to 4 with betas (0, 0.9): the second moment (256 g)^2 reaches 10^6,
    and its updates and bias correction must stay in the ring (at 16-bit factors they left
    it from |g| > 0.35, and steps of 50 lr followed)."""
    g = torch.Generator().manual_seed(5)
    w0 = torch.randn(60, generator=g, dtype=torch.float64)
    grads = [torch.sign(torch.randn(60, generator=g, dtype=torch.float64))
             * torch.logspace(-0.3, 0.6, 60, dtype=torch.float64) for _ in range(4)]
    kw = {"lr": 1.5e-3, "betas": (0.0, 0.9)}
    expected = torch_steps("adam", w0, grads, **kw)
    moved = (expected - w0).abs().max()
    for got in await run_pair(secure_steps, "adam", w0, grads, kw, timeout=30):
        assert float((got - expected).abs().max()) <= 0.02 * float(moved) + 8 * 2 ** -16


async def adam_rounds(party, w0, grads, kw, masked: bool, passes: int = 1):
    """Adam's steps on gradients given as shares, or as truncations' outputs (public up to a
    mask, as one backward pass leaves them; with passes = 2, the sum of two such, as the
    discriminator's real and fake passes accumulate them); the last step's rounds."""
    from mpcrt import ops

    p = Parameter(await party.input(w0 if party.id == 0 else None, src=0))
    opt = optim.Adam([p], **kw)
    for g in grads:
        if masked:
            p.grad = None
            terms = [await ops.open_masked(await party.input(part if party.id == 1 else None, src=1))
                     for part in ((g * 0.25, g * 0.75) if passes == 2 else (g,))]
            for term in terms if party.id == 0 else terms[::-1]:  # concurrent passes end in any order
                p.accumulate(term)
        else:
            p.grad = await party.input(g if party.id == 1 else None, src=1)
        await p.grad.reveal()  # the count starts clean
        rounds = party.stats.rounds
        await opt.step()
        rounds = party.stats.rounds - rounds
    return await p.data.reveal(), rounds


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.999)])
async def test_adam_on_masked_gradients_opens_nothing_and_follows_torch(betas):
    """Gradients that are truncations' outputs (one backward pass) need no opening for their
    squares: a round fewer than shared ones, and the same steps as torch's. With b1 = 0.9 the
    first moment's scalings (2 rounds) still leave the inverse square root's rounds alone."""
    w0, grads = gradients()
    kw = {"lr": 2e-4, "betas": betas}
    expected = torch_steps("adam", w0, grads, **kw)
    moved = (expected - w0).abs().max()
    masked = await run_pair(adam_rounds, w0, grads, kw, True, timeout=30)
    shared = await run_pair(adam_rounds, w0, grads, kw, False, timeout=30)
    for (got, rounds), (got_shared, shared_rounds) in zip(masked, shared, strict=True):
        # v_hat in 2 truncations (g^2 / 2^10, then v_hat from it and the old v), the inverse
        # square root's 5 (the DCF's opening and the product's, m, the start, the scaled step)
        # with the first moment's and v's own truncations beside them; shared: the opening first
        assert (rounds, shared_rounds) == (7, 8)
        for value in (got, got_shared):
            assert float((value - expected).abs().max()) <= 0.02 * float(moved) + 8 * 2 ** -16


async def test_adam_squares_a_gradient_two_passes_summed_without_opening_it():
    """The discriminator's gradient is the sum of its two passes' (each a truncation's output):
    its square is three masked products (local), so the step takes the rounds of one pass's
    gradient, and follows torch, whichever order each party's passes added their terms in."""
    w0, grads = gradients()
    kw = {"lr": 2e-4, "betas": (0.5, 0.999)}
    expected = torch_steps("adam", w0, grads, **kw)
    moved = (expected - w0).abs().max()
    for got, rounds in await run_pair(adam_rounds, w0, grads, kw, True, 2, timeout=30):
        assert rounds == 7
        assert float((got - expected).abs().max()) <= 0.02 * float(moved) + 8 * 2 ** -16


def test_a_parameter_keeps_the_gradients_it_summed_until_its_gradient_is_set_otherwise():
    p = Parameter(torch.zeros(3))
    a, b = torch.ones(3), torch.full((3,), 2.0)
    p.accumulate(a)
    p.accumulate(b)
    assert torch.equal(p.grad, a + b) and [t.tolist() for t in p.gradient_parts()] == [a.tolist(), b.tolist()]
    p.grad = torch.full((3,), 5.0)  # set directly: it is its own only part
    assert [t.tolist() for t in p.gradient_parts()] == [[5.0] * 3]
    p.grad = None
    assert p.gradient_parts() == []
