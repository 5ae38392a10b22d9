"""ReLU and LeakyReLU forward and backward against torch autograd."""

from __future__ import annotations

import pytest
import torch

import mpcrt
from mpcrt import ops
from tests.conftest import run_pair

ULP = 2.0 ** -16


def q(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.double() / ULP) * ULP


async def forward_backward(party, x, g, kind: str, slope: float, method: str):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    if kind == "relu":
        done = await ops.relu_with_derivative(X, method)
    else:
        done = await ops.leaky_relu_with_derivative(X, slope, method)
    grad = await ops.relu_backward(G, done.derivative)
    return await done.output.reveal(), await grad.reveal(), party.stats.op(kind).rounds


@pytest.mark.parametrize("method", ["tree", "lpgan", "dcf"])
@pytest.mark.parametrize(("kind", "slope"), [("relu", 0.0), ("leaky", 0.2), ("leaky", 0.01)])
async def test_against_autograd(kind, slope, method):
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.tensor([0.0, ULP, -ULP, -3.0, 3.0]), torch.randn(300, generator=g) * 10]).double()
    grad_out = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref_x = q(x).requires_grad_()
    # the slope the parties hold is fixed point too (0.2 is 13107 / 2^16)
    held_slope = float(q(torch.tensor(slope)))
    ref_y = torch.relu(ref_x) if kind == "relu" else torch.nn.functional.leaky_relu(ref_x, held_slope)
    ref_y.backward(q(grad_out))
    # autograd takes relu'(0) = 0; ours takes 1 (documented): compare away from 0 only
    away = x != 0
    bound = 0 if kind == "relu" else 1  # leaky: one truncation of the product
    for y, grad, rounds in await run_pair(forward_backward, x, grad_out, "relu" if kind == "relu" else "leaky_relu",
                                          slope, method):
        assert float(((y - ref_y.detach()).abs() / ULP).max()) <= bound
        assert float(((grad - ref_x.grad)[away].abs() / ULP).max()) <= bound
        # the sign (tree: 4 rounds, lpgan: 63) and then one round for x times the bit; the
        # DCF gives the product and the bit in its opening's round; leaky: + a truncation
        assert rounds == {"tree": 6, "lpgan": 64, "dcf": 1}[method] + (0 if kind == "relu" else 1)


async def backward_after_a_product(party, x, g):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await ops.mul(await party.input(g if party.id == 1 else None, src=1), 1.0)  # a truncation's output
    derivative = (await ops.relu_with_derivative(X, "tree")).derivative
    before = (party.stats.rounds, party.stats.bytes_sent)
    grad = await ops.relu_backward(G, derivative)
    cost = (party.stats.rounds - before[0], party.stats.bytes_sent - before[1])
    return await grad.reveal(), await G.reveal(), cost


async def test_relu_backward_reuses_the_forwards_opened_bit():
    g = torch.Generator().manual_seed(3)
    x, grad_out = torch.randn(200, generator=g) * 5, torch.randn(200, generator=g)
    for grad, held_g, cost in await run_pair(backward_after_a_product, x, grad_out):
        assert torch.equal(grad, held_g * (q(x) >= 0))
        assert cost == (0, 0)  # the bit was opened in the forward, the gradient is masked: local


async def dcf_backward_after_a_product(party, x, w, g, slope):
    X = await party.input(x if party.id == 0 else None, src=0)
    W = await party.input(w if party.id == 1 else None, src=1)
    G = await ops.mul(await party.input(g if party.id == 1 else None, src=1), 1.0)  # a truncation's output
    z = await ops.mul(X, W, frac_bits=32)  # an untruncated product: the forward truncates it after the DCF
    done = await (ops.relu_with_derivative(z, "dcf", frac_bits=16) if slope == 0
                  else ops.leaky_relu_with_derivative(z, slope, "dcf", frac_bits=16))
    before = (party.stats.rounds, party.stats.bytes_sent)
    grad = await ops.relu_backward(G, done.derivative)
    cost = (party.stats.rounds - before[0], party.stats.bytes_sent - before[1])
    return await grad.reveal(), cost


@pytest.mark.parametrize("slope", [0.0, 0.2])
async def test_a_dcf_forward_opens_its_bit_in_its_truncation_round_for_the_backward(slope):
    """The DCF's bit comes as ring shares; where the forward truncates its product after the
    DCF's round, that round opens the bit under a mask too, so the backward on a masked
    gradient opens nothing: ReLU's is local, LeakyReLU's one truncation (8 bytes an element)."""
    g = torch.Generator().manual_seed(6)
    x, w, grad_out = (torch.randn(300, generator=g) for _ in range(3))
    x[:3] = torch.tensor([ULP, -ULP, 0.0])
    product = q(x) * q(w)
    held_slope = float(q(torch.tensor(slope)))
    want = q(grad_out) * torch.where(product >= 0, 1.0, held_slope)
    for grad, (rounds, sent) in await run_pair(dcf_backward_after_a_product, x, w, grad_out, slope):
        assert (rounds, sent) == ((0, 0) if slope == 0 else (1, 8 * 300))
        assert float(((grad - want).abs() / ULP).max()) <= (0 if slope == 0 else 1)


async def untruncated_backward(party, x, g, slope, method):
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    done = await ops.leaky_relu_with_derivative(X, slope, method)
    grad = await ops.relu_backward(G, done.derivative, untruncated=True)
    return await grad.reveal(), grad.frac_bits


@pytest.mark.parametrize("method", ["tree", "dcf"])
async def test_leaky_backward_hands_its_product_over_untruncated(method):
    """untruncated: slope g + (1 - slope) d g at 32 bits, exact (a layer before truncates it)."""
    g = torch.Generator().manual_seed(4)
    x, grad_out = torch.randn(300, generator=g, dtype=torch.float64) * 4, torch.randn(300, generator=g).double()
    x[:3] = torch.tensor([ULP, -ULP, 0.0])
    want = q(grad_out) * torch.where(q(x) >= 0, 1.0, float(q(torch.tensor(0.2))))
    for grad, frac_bits in await run_pair(untruncated_backward, x, grad_out, 0.2, method):
        assert frac_bits == 32
        assert torch.equal(grad, want)


async def relu_of_untruncated(party, x, w, slope, method):
    X = await party.input(x if party.id == 0 else None, src=0)
    W = await party.input(w if party.id == 1 else None, src=1)
    z = await ops.mul(X, W, frac_bits=32)  # the untruncated product
    await z.reveal()
    rounds = party.stats.rounds
    done = await (ops.relu_with_derivative(z, method, frac_bits=16) if slope == 0
                  else ops.leaky_relu_with_derivative(z, slope, method, frac_bits=16))
    y = done.output
    assert done.derivative.frac_bits == 16
    used = party.stats.rounds - rounds
    return await y.reveal(), y.frac_bits, used


@pytest.mark.parametrize("method", ["tree", "dcf"])
@pytest.mark.parametrize("slope", [0.0, 0.2])
async def test_relu_truncates_an_untruncated_input_while_it_takes_the_sign(slope, method):
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(300, generator=g) * 4, torch.randn(300, generator=g)
    x[:3] = torch.tensor([ULP, -ULP, 0.0])  # products within a unit of zero
    product = q(x) * q(w)
    want = torch.where(product >= 0, product, product * float(q(torch.tensor(slope))))
    for y, frac_bits, rounds in await run_pair(relu_of_untruncated, x, w, slope, method):
        assert frac_bits == 16
        assert float(((y - want).abs() / ULP).max()) <= (1 if slope == 0 else 2)  # the truncation(s)
        # tree: the sign (4 rounds, the truncation in its first), the bit's opening; DCF: the
        # opening with the product, then the product's truncation (leaky: x's, in the first);
        # leaky: + a truncation
        assert rounds == {"tree": 6, "dcf": 2}[method] + (0 if slope == 0 else 1)


async def plain_calls(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    outs = [await ops.relu(X), await ops.leaky_relu(X, 0.2),
            await ops.batch_norm(X.reshape(2, 3, 5), torch.zeros(3), torch.ones(3), training=False)]
    assert all(isinstance(o, mpcrt.ArithmeticShare) for o in outs)
    return [await o.reveal() for o in outs]


async def test_the_ops_return_what_torch_returns():
    """ops.relu, leaky_relu and batch_norm return the output alone, as torch.nn.functional's do."""
    x = torch.linspace(-3, 3, 30)
    want = [torch.relu(q(x)), torch.nn.functional.leaky_relu(q(x), float(q(torch.tensor(0.2)))),
            torch.nn.functional.batch_norm(q(x).reshape(2, 3, 5), torch.zeros(3, dtype=torch.float64),
                                           torch.ones(3, dtype=torch.float64), training=False)]
    for got in await run_pair(plain_calls, x):
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and float((g - w.double()).abs().max()) <= 2 * ULP
