"""The loss gradient at the logits: exact, and free of a round when the batch is a power of two."""

from __future__ import annotations

import pytest
import torch
from torch import nn as tnn

import gan
from gan.loss import bce_logit_grad
from tests.conftest import run_pair
from tests.gan.nn.test_layers import plain_twin


async def gradient_of(party, p: torch.Tensor, label: float):
    P = await party.input(p if party.id == 0 else None, src=0)
    before = party.stats.rounds
    grad = await bce_logit_grad(P, label)
    spent = party.stats.rounds - before
    return await grad.reveal(), spent


@pytest.mark.parametrize(("batch", "rounds"), [(8, 0), (6, 2)])  # 1/6: ops.scale, two truncations
async def test_the_gradient_is_exact_and_a_power_of_two_batch_costs_no_round(batch, rounds):
    p = torch.rand(batch, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    encoded = torch.round(p * 2 ** 16) / 2 ** 16
    results = await run_pair(gradient_of, p, 1.0)
    for got, _ in results:
        assert float((got - (encoded - 1.0) / batch).abs().max()) <= (0 if rounds == 0 else 3 * 2 ** -16)
    assert max(spent for _, spent in results) == rounds  # party 0's first may join its input's frame


def with_product_last():
    torch.manual_seed(2)
    return tnn.Sequential(tnn.Conv2d(2, 3, 3, 1, 1), tnn.Flatten(), tnn.Linear(3 * 4 * 4, 1), tnn.Sigmoid())


def with_batch_norm_last():
    torch.manual_seed(3)
    return tnn.Sequential(tnn.Conv2d(2, 1, 4, 1, 0, bias=False), tnn.BatchNorm2d(1), tnn.Flatten(), tnn.Sigmoid())


async def backward_from_the_loss(party, module: tnn.Module, x: torch.Tensor):
    model = await gan.secure(module, party, src=0)
    X = await party.input(x if party.id == 0 else None, src=0)
    grad = await bce_logit_grad(await model.forward(X), 1.0)
    await model.backward_from_logits(grad)
    return {name: await p.grad.reveal() for name, p in model.named_parameters()}


@pytest.mark.parametrize("make", [with_product_last, with_batch_norm_last])
async def test_a_finer_gradient_reaches_every_parameter_at_the_parties_scale(make):
    """The gradient read at 3 more bits (batch 8) goes to the last product layer as it is
    (the linear layer truncates it, its bias's gradient rescaled) or, where batch norm comes
    last, is rescaled first: the parameters' gradients match the plaintext twin's."""
    x = torch.randn(8, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    twin = await plain_twin(make())
    await twin.backward_from_logits(await bce_logit_grad(await twin.forward(x), 1.0))
    want = {name: p.grad for name, p in twin.named_parameters()}
    for got in await run_pair(backward_from_the_loss, make(), x):
        assert set(got) == set(want)
        for name, value in got.items():
            assert float((value - want[name]).abs().max()) <= 2e-3, name
