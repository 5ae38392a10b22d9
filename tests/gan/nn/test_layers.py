"""Every layer's forward and backward: plaintext backend against torch autograd (the
formulas), then the secure run against the plaintext one (the protocols)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from torch import nn as tnn

import gan
from gan import nn
from gan.models import Square
from tests.conftest import run_pair

torch.manual_seed(0)

LAYERS = {
    "conv": lambda: tnn.Conv2d(3, 4, 4, stride=2, padding=1),
    "conv_odd": lambda: tnn.Conv2d(2, 3, 3, stride=2, padding=0, bias=False),
    "convT": lambda: tnn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),
    "convT_op": lambda: tnn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
    "linear": lambda: tnn.Linear(6, 5),
    "bn": lambda: tnn.BatchNorm2d(4),
    "relu": tnn.ReLU, "leaky": lambda: tnn.LeakyReLU(0.2), "sigmoid": tnn.Sigmoid, "tanh": tnn.Tanh,
    "square": Square,
    "dcgan_block": lambda: tnn.Sequential(tnn.Conv2d(1, 4, 4, 2, 1, bias=False), tnn.BatchNorm2d(4),
                                          tnn.LeakyReLU(0.2), tnn.Flatten(), tnn.Linear(4 * 4 * 4, 1),
                                          tnn.Sigmoid()),
    # ReLUs after a convolution, a linear layer and batch norm take their inputs untruncated
    "conv_relu": lambda: tnn.Sequential(tnn.Conv2d(2, 3, 3, 1, 1), tnn.ReLU(), tnn.Flatten(), tnn.Linear(48, 2),
                                        tnn.LeakyReLU(0.2)),
    "g_block": lambda: tnn.Sequential(tnn.ConvTranspose2d(3, 2, 4, 2, 1, bias=False), tnn.BatchNorm2d(2),
                                      tnn.ReLU(), tnn.ConvTranspose2d(2, 1, 4, 2, 1), tnn.Tanh()),
    # LeakyReLUs hand their outputs to the next convolution untruncated, the last convolution
    # hands its own to the sigmoid through the flatten
    "d_block": lambda: tnn.Sequential(tnn.Conv2d(1, 3, 4, 2, 1, bias=False), tnn.LeakyReLU(0.2),
                                      tnn.Conv2d(3, 4, 4, 2, 1), tnn.LeakyReLU(0.2), tnn.Conv2d(4, 1, 2, 1, 0),
                                      tnn.Flatten(), tnn.Sigmoid()),
}
INPUTS = {"conv": (2, 3, 8, 8), "conv_odd": (2, 2, 7, 7), "convT": (2, 4, 3, 3), "convT_op": (1, 2, 3, 3),
          "linear": (3, 6), "bn": (4, 4, 3, 3), "relu": (2, 5), "leaky": (2, 5), "sigmoid": (2, 5), "tanh": (2, 5),
          "square": (2, 5),
          "dcgan_block": (3, 1, 8, 8), "conv_relu": (2, 2, 4, 4), "g_block": (2, 3, 2, 2),
          "d_block": (2, 1, 8, 8)}


def autograd(module: tnn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(g)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


class PlainInputs:
    """A stand-in party whose input() returns the tensor itself: the plaintext twin."""

    id = 0

    async def input(self, value, src):
        return value.detach().clone().double()


async def plain_twin(module: tnn.Module) -> nn.Module:
    """The twin on plain tensors: same layer code, no protocol."""
    return await gan.secure(module, PlainInputs(), src=0)


async def run_layer(layer: nn.Module, x, g):
    y = await layer.forward(x)
    dx = await layer.backward(g)
    return y, dx, {n: p.grad for n, p in layer.named_parameters()}


@pytest.mark.parametrize("name", list(LAYERS))
def test_plaintext_backend_matches_autograd(name):
    module = LAYERS[name]().double().train()
    x = torch.randn(INPUTS[name], dtype=torch.float64)
    y_ref, dx_ref, grads_ref = autograd(module, x, g := torch.randn_like(module(x)))
    async def plain_run():
        return await run_layer(await plain_twin(module), x, g)

    y, dx, grads = asyncio.run(plain_run())
    assert torch.allclose(y, y_ref, atol=1e-9)
    assert torch.allclose(dx, dx_ref, atol=1e-9)
    assert set(grads) == set(grads_ref)
    for n in grads:
        assert grads[n] is not None, f"gradient of {n} is missing"
        assert torch.allclose(grads[n], grads_ref[n], atol=1e-9), n


async def secure_layer(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor):
    twin = await gan.secure(module, party, src=0)
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    y, dx, grads = await run_layer(twin, X, G)
    opened = {n: await v.reveal() for n, v in grads.items()}
    return await y.reveal(), await dx.reveal(), opened, [n for n, _ in twin.named_parameters()]


@pytest.mark.parametrize("name", list(LAYERS))
async def test_secure_layers_match_the_plaintext_backend(name):
    module = LAYERS[name]().train()
    with torch.no_grad():  # fixed-point-exact weights, so only the protocols' error remains
        for p in module.parameters():
            p.copy_(torch.round(p * 2 ** 16) / 2 ** 16)
    x = torch.round(torch.randn(INPUTS[name]) * 2 ** 16) / 2 ** 16
    g = torch.round(torch.randn_like(module(x)) * 2 ** 16) / 2 ** 16
    y_ref, dx_ref, grads_ref = await run_layer(await plain_twin(module), x.double(), g.double())
    for y, dx, grads, names in await run_pair(secure_layer, module, x, g, timeout=30):
        assert names == [n for n, _ in module.named_parameters()]
        assert float((y - y_ref).abs().max()) <= 2e-3
        assert float((dx - dx_ref).abs().max()) <= 2e-3
        for n, value in grads.items():
            assert float((value - grads_ref[n]).abs().max()) <= 5e-3, n


async def reveal_twin(party, module):
    twin = await gan.secure(module, party, src=1)
    return await gan.reveal(twin, module)


async def test_reveal_gives_back_the_torch_model_of_the_source_party():
    a = LAYERS["dcgan_block"]()
    restored, _ = await run_pair(reveal_twin, a)
    for (n, p), (_, q) in zip(a.state_dict().items(), restored.state_dict().items(), strict=True):
        if p.is_floating_point():
            assert float((p - q).abs().max()) <= 2 ** -16, n


async def unsupported(party):
    return await gan.secure(tnn.Conv2d(4, 4, 3, groups=2), party)


async def test_unsupported_layers_say_so():
    results = await run_pair(unsupported, timeout=2)
    assert any(isinstance(r, TypeError) and "grouped" in str(r) for r in results)


async def reveal_to_owner(party, module):
    twin = await gan.secure(module, party, src=0)
    return await gan.reveal(twin, module, to=0)


async def test_reveal_to_one_party_only():
    model = LAYERS["dcgan_block"]()
    owner, other = await run_pair(reveal_to_owner, model)
    assert other is None
    for (n, p), (_, q) in zip(model.state_dict().items(), owner.state_dict().items(), strict=True):
        if p.is_floating_point():
            assert float((p - q).abs().max()) <= 2 ** -16, n


async def plain_weight_then_relu(party, x, w):
    layer = nn.Sequential(nn.Linear(w), nn.ReLU())  # a public weight: its scale is the party's
    X = await party.input(x if party.id == 0 else None, src=0)
    return await (await layer.forward(X)).reveal()


async def test_a_public_weight_before_a_fused_relu():
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    want = torch.relu((torch.round(x * 2 ** 16) / 2 ** 16) @ (torch.round(w * 2 ** 16) / 2 ** 16).t())
    for y in await run_pair(plain_weight_then_relu, x, w):
        assert float((y - want).abs().max()) <= 2 ** -15


class Barrier(nn.Module):
    """A layer that takes nothing untruncated: it stops Sequential's hand-overs."""

    async def forward(self, x):
        return x

    async def backward(self, grad):
        return grad


async def d_forward_rounds(party, module: tnn.Module, x: torch.Tensor, barrier: bool):
    secure = await gan.secure(module, party, src=0)
    if barrier:  # before each convolution after a LeakyReLU
        layers = secure.layers
        secure.layers = [*layers[:2], Barrier(), *layers[2:4], Barrier(), *layers[4:]]
    X = await party.input(x if party.id == 0 else None, src=0)
    before = party.stats.rounds
    y = await secure.forward(X)
    return await y.reveal(), party.stats.rounds - before


async def test_a_leaky_relu_hands_its_output_to_the_next_product():
    """conv -> LeakyReLU -> conv: the LeakyReLU's output is not truncated by itself but in
    the next convolution's truncation (its product carries 3f bits), one round less each."""
    module = LAYERS["d_block"]()
    x = torch.randn(INPUTS["d_block"], dtype=torch.float64)
    want = module.double()(x).detach()
    handed = await run_pair(d_forward_rounds, module, x, False)
    stopped = await run_pair(d_forward_rounds, module, x, True)
    for (y, rounds), (y_stopped, rounds_stopped) in zip(handed, stopped, strict=True):
        assert float((y - want).abs().max()) <= 2e-3 and float((y_stopped - want).abs().max()) <= 2e-3
        assert rounds_stopped - rounds == 2, (rounds, rounds_stopped)


# backward hand-overs: a LeakyReLU's gradient goes to the layer before it untruncated
HAND_BACK = {
    "conv": lambda: tnn.Sequential(tnn.Conv2d(2, 3, 4, 2, 1), tnn.LeakyReLU(0.2), tnn.Flatten(), tnn.Linear(12, 2)),
    "bn": lambda: tnn.Sequential(tnn.Conv2d(2, 3, 4, 2, 1, bias=False), tnn.BatchNorm2d(3), tnn.LeakyReLU(0.2),
                                 tnn.Flatten(), tnn.Linear(12, 2)),
}


async def backward_rounds(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor, barrier: bool):
    secure = await gan.secure(module, party, src=0)
    if barrier:  # before the LeakyReLU
        at = next(i for i, layer in enumerate(secure.layers) if isinstance(layer, nn.LeakyReLU))
        secure.layers = [*secure.layers[:at], Barrier(), *secure.layers[at:]]
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    await secure.forward(X)
    before = party.stats.rounds
    dx = await secure.backward(G)
    rounds = party.stats.rounds - before
    grads = {n: await p.grad.reveal() for n, p in secure.named_parameters()}
    return await dx.reveal(), grads, rounds


@pytest.mark.parametrize("before", list(HAND_BACK))
async def test_a_leaky_relu_hands_its_gradient_to_the_layer_before(before):
    """LeakyReLU's backward product slope g + (1 - slope) d g is truncated in the round of the
    layer before it (a product's truncation, batch norm's opening of its gradient): one
    round less than with a barrier between them, and the same gradients as torch's. The
    comparisons by the tree: with the DCF the barrier would cost the backward a second
    round, its bit's opening, which the forward makes only where it truncates an
    untruncated input (ops.activations)."""
    module = HAND_BACK[before]().train()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.round(p * 2 ** 16) / 2 ** 16)
    x = torch.round(torch.randn(2, 2, 4, 4) * 2 ** 16) / 2 ** 16
    g = torch.round(torch.randn(2, 2) * 2 ** 16) / 2 ** 16
    _, dx_ref, grads_ref = autograd(module.double(), x.double(), g.double())
    tree = [{"comparison": "tree"}] * 2
    handed = await run_pair(backward_rounds, module.float(), x, g, False, timeout=30, party_options=tree)
    stopped = await run_pair(backward_rounds, module, x, g, True, timeout=30, party_options=tree)
    for (dx, grads, rounds), (dx_stopped, _, rounds_stopped) in zip(handed, stopped, strict=True):
        assert rounds_stopped - rounds == 1, (rounds, rounds_stopped)
        for got in (dx, dx_stopped):
            assert float((got - dx_ref).abs().max()) <= 2e-3
        for n, value in grads.items():
            assert float((value - grads_ref[n]).abs().max()) <= 5e-3, n


async def relu_backward_rounds(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor):
    secure = await gan.secure(module, party, src=0)
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    await secure.forward(X)
    before = party.stats.op("relu_backward").rounds
    dx = await secure.backward(G)
    return await dx.reveal(), party.stats.op("relu_backward").rounds - before


async def test_a_transposed_convolution_keeps_its_gradient_masked_for_the_relu():
    """ConvTranspose2d's input gradient is a truncation's output, public up to a mask the
    dealer knows: uncropped, it stays so, and the ReLU before it multiplies by its bit
    without an opening."""
    module = tnn.Sequential(tnn.ConvTranspose2d(2, 3, 4, 2, 1), tnn.ReLU(), tnn.ConvTranspose2d(3, 1, 4, 2, 1))
    x, g = torch.randn(2, 2, 3, 3), torch.randn(2, 1, 12, 12)
    _, dx_ref, _ = autograd(module.double(), x.double(), g.double())
    for dx, rounds in await run_pair(relu_backward_rounds, module.float(), x, g, timeout=30):
        assert rounds == 0
        assert float((dx - dx_ref).abs().max()) <= 2e-3


async def op_backward_rounds(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor, label: str):
    secure = await gan.secure(module, party, src=0)
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    await secure.forward(X)
    before = party.stats.op(label).rounds
    dx = await secure.backward(G)
    grads = {n: await p.grad.reveal() for n, p in secure.named_parameters()}
    return await dx.reveal(), grads, party.stats.op(label).rounds - before


@pytest.mark.parametrize(("after", "rounds"), [(lambda: tnn.ReLU(), 5), (lambda: tnn.LeakyReLU(0.2), 5),
                                               (lambda: tnn.Tanh(), 6)])
async def test_batch_norm_backward_reads_its_output_as_the_next_layer_truncated_it(after, rounds):
    """Batch norm hands its output untruncated to a ReLU or LeakyReLU, which truncates it while
    it takes its sign and hands it back masked: the backward's k (x - mean) is k1 (y - beta),
    one round fewer (5). A Tanh keeps no truncated input: 6, and the same gradients."""
    module = tnn.Sequential(tnn.Conv2d(2, 3, 4, 2, 1, bias=False), tnn.BatchNorm2d(3), after(), tnn.Flatten(),
                            tnn.Linear(12, 2)).train()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.round(p * 2 ** 16) / 2 ** 16)
        module[1].bias.copy_(torch.tensor([0.25, -0.5, 0.125]))  # beta enters y: the backward takes it out
    x = torch.round(torch.randn(4, 2, 4, 4) * 2 ** 16) / 2 ** 16
    g = torch.round(torch.randn(4, 2) * 2 ** 16) / 2 ** 16
    _, dx_ref, grads_ref = autograd(module.double(), x.double(), g.double())
    for dx, grads, taken in await run_pair(op_backward_rounds, module.float(), x, g, "batch_norm_backward",
                                           timeout=30):
        assert taken == rounds
        assert float((dx - dx_ref).abs().max()) <= 2e-3
        for n, value in grads.items():
            assert float((value - grads_ref[n]).abs().max()) <= 5e-3, n


async def unwanted_gradients(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor, input_grad: bool,
                             frozen: bool):
    secure = await gan.secure(module, party, src=0)
    secure.requires_grad_(not frozen)
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    await secure.forward(X)
    sent = party.stats.bytes_sent
    dx = await secure.backward(G, input_grad=input_grad)
    sent = party.stats.bytes_sent - sent
    grads = {n: None if p.grad is None else await p.grad.reveal() for n, p in secure.named_parameters()}
    return None if dx is None else await dx.reveal(), grads, sent


@pytest.mark.parametrize("name", ["d_block", "g_block", "dcgan_block"])
async def test_gradients_nobody_wants_are_not_made(name):
    """input_grad=False: the first product layer makes no input gradient; requires_grad_(False):
    no parameter gets one. Either way what is made is the same, and fewer bytes are sent."""
    module = LAYERS[name]().train()
    x = torch.randn(INPUTS[name])
    g = torch.randn_like(module(x))
    full = await run_pair(unwanted_gradients, module, x, g, True, False, timeout=30)
    no_input = await run_pair(unwanted_gradients, module, x, g, False, False, timeout=30)
    frozen = await run_pair(unwanted_gradients, module, x, g, True, True, timeout=30)
    for (dx, grads, sent), (dx_none, grads_kept, sent_none), (dx_frozen, no_grads, sent_frozen) in zip(
            full, no_input, frozen, strict=True):
        assert dx_none is None and sent_none < sent
        assert grads.keys() == grads_kept.keys()
        assert all(float((grads[n] - grads_kept[n]).abs().max()) <= 1e-3 for n in grads)  # other masks
        assert all(v is None for v in no_grads.values()) and sent_frozen < sent
        assert float((dx_frozen - dx).abs().max()) <= 1e-3


async def prepared_backward_rounds(party, module: tnn.Module, x: torch.Tensor, g: torch.Tensor, prepare: bool):
    secure = await gan.secure(module, party, src=0)
    X = await party.input(x if party.id == 0 else None, src=0)
    G = await party.input(g if party.id == 1 else None, src=1)
    await secure.forward(X)
    if prepare:  # otherwise the backward makes the derivative itself
        await secure.prepare_backward()
    before = party.stats.rounds
    dx = await secure.backward(G)
    rounds = party.stats.rounds - before
    grads = {n: await p.grad.reveal() for n, p in secure.named_parameters()}
    return await dx.reveal(), grads, rounds


@pytest.mark.parametrize("output", [tnn.Tanh, tnn.Sigmoid])
async def test_an_output_activation_makes_its_derivative_ahead_of_the_backward(output):
    """Tanh's and Sigmoid's derivative from their output (its square: an opening and a
    truncation) is made by prepare_backward beside other work; the backward is then one
    masked product, handed untruncated to the convolution before it: 2 rounds fewer than a
    backward that makes the derivative itself, and the same gradients as torch's."""
    module = tnn.Sequential(tnn.ConvTranspose2d(2, 1, 4, 2, 1), output()).train()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.round(p * 2 ** 16) / 2 ** 16)
    x = torch.round(torch.randn(2, 2, 3, 3) * 2 ** 16) / 2 ** 16
    g = torch.round(torch.randn(2, 1, 6, 6) * 2 ** 16) / 2 ** 16
    _, dx_ref, grads_ref = autograd(module.double(), x.double(), g.double())
    prepared = await run_pair(prepared_backward_rounds, module.float(), x, g, True, timeout=30)
    unprepared = await run_pair(prepared_backward_rounds, module, x, g, False, timeout=30)
    for (dx, grads, rounds), (dx_late, grads_late, rounds_late) in zip(prepared, unprepared, strict=True):
        assert rounds_late - rounds == 2, (rounds, rounds_late)
        for got, got_grads in ((dx, grads), (dx_late, grads_late)):
            assert float((got - dx_ref).abs().max()) <= 2e-3
            for n, value in got_grads.items():
                assert float((value - grads_ref[n]).abs().max()) <= 5e-3, n


async def test_nothing_is_prepared_outside_training():
    twin = await plain_twin(tnn.Sequential(tnn.Linear(3, 2), tnn.Tanh()))
    y = await twin.forward(torch.randn(4, 3, dtype=torch.float64))
    await twin.prepare_backward()
    assert torch.equal(twin[1]._derivative, 1 - y * y)
    assert twin.eval().prepare_backward() is None
    assert nn.Sequential(nn.Reshape(-1)).prepare_backward() is None
