"""A secure training iteration against its plaintext twin (same model, data and noise)."""

from __future__ import annotations

import pytest
import torch

import gan
from gan import models, optim
from gan.nn.norm import BatchNorm2d
from gan.step import train_step
from tests.conftest import run_pair
from tests.gan.nn.test_layers import PlainInputs


def setup(seed: int = 0):
    preset = models.PRESETS["small"]
    gen = torch.Generator().manual_seed(seed)
    d = models.init_weights(models.discriminator(preset), gen)
    g = models.init_weights(models.generator(preset), gen)
    for m in (d, g):  # fixed-point-exact weights: only the protocols' error remains
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.round(p * 2 ** 16) / 2 ** 16)
    real = torch.round(torch.rand(4, 1, 16, 16, generator=gen).mul(2).sub(1) * 2 ** 16) / 2 ** 16
    noise = torch.round(torch.randn(4, preset.nz, 1, 1, generator=gen) * 2 ** 16) / 2 ** 16
    return d, g, real, noise


def optimizers(d, g, kind: str):
    if kind == "sgd":
        return optim.SGD(d.parameters(), lr=0.05, momentum=0.5), optim.SGD(g.parameters(), lr=0.05, momentum=0.5)
    return optim.Adam(d.parameters(), 2e-3, (0.5, 0.999)), optim.Adam(g.parameters(), 2e-3, (0.5, 0.999))


async def iteration(party, d_model, g_model, real, noise, kind):
    d, g = await gan.secure(d_model, party), await gan.secure(g_model, party)
    x = await party.input(real if party.id == 0 else None, src=0)
    z = await party.input(noise if party.id == 0 else None, src=0)
    opt_d, opt_g = optimizers(d, g, kind)
    out = await train_step(d, g, opt_d, opt_g, x, z)
    d_after, g_after = await gan.reveal(d, d_model), await gan.reveal(g, g_model)
    return await out.d_real.reveal(), d_after.state_dict(), g_after.state_dict(), party.stats.rounds


async def plain_iteration(d_model, g_model, real, noise, kind):
    d, g = await gan.secure(d_model, PlainInputs()), await gan.secure(g_model, PlainInputs())
    opt_d, opt_g = optimizers(d, g, kind)
    out = await train_step(d, g, opt_d, opt_g, real.double(), noise.double())
    return out.d_real, {n: p.data for n, p in d.named_parameters()}, {n: p.data for n, p in g.named_parameters()}


def running_statistics(d) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": getattr(layer, name) for i, layer in enumerate(d.layers) if isinstance(layer, BatchNorm2d)
            for name in ("running_mean", "running_var")}


async def plain_statistics(d_model, g_model, real, noise):
    d, g = await gan.secure(d_model, PlainInputs()), await gan.secure(g_model, PlainInputs())
    opt_d, opt_g = optimizers(d, g, "sgd")
    await train_step(d, g, opt_d, opt_g, real.double(), noise.double())
    return running_statistics(d)


async def test_concurrent_passes_leave_the_running_statistics_of_the_last_one():
    """D's two concurrent passes each update their own copy of the running statistics; the
    fake pass's, last in program order, stays: at both parties alike however their passes
    interleave (shares of two different updates would add up to garbage), and as the twin."""
    d, g, real, noise = setup()
    want = await plain_statistics(d, g, real, noise)
    moved = running_statistics(await gan.secure(d, PlainInputs()))
    results = await run_pair(iteration, d, g, real, noise, "sgd", timeout=120)
    d_state = results[0][1]
    assert max(float((value - moved[name]).abs().max()) for name, value in want.items()) > 1e-2  # they moved
    for name, value in want.items():
        assert float((d_state[name].double() - value).abs().max()) <= 1e-3, name


@pytest.mark.parametrize("kind", ["sgd", "adam"])
async def test_secure_iteration_follows_the_plaintext_twin(kind):
    d, g, real, noise = setup()
    p_ref, d_ref, g_ref = await plain_iteration(d, g, real, noise, kind)
    results = await run_pair(iteration, d, g, real, noise, kind, timeout=120)
    p_real, d_state, g_state, rounds = results[0]
    # a whole D: conv, batch norm on 4 images (1/std up to ~50 at DCGAN init), LeakyReLU, sigmoid
    assert float((p_real - p_ref).abs().max()) <= 1e-2
    lr = 0.05 if kind == "sgd" else 2e-3
    disagreeing, total = 0, 0
    for ref, state in ((d_ref, d_state), (g_ref, g_state)):
        for name, value in ref.items():
            diff = (state[name].double() - value).abs()
            if kind == "sgd":
                assert float(diff.max()) <= 0.05 * lr, f"{name} differs from the plaintext twin by {float(diff.max())}"
            else:
                # Adam's first step moves every weight by lr * sign(gradient): where a gradient is
                # within the protocols' error of 0 its sign may differ, a difference of 2 lr
                assert float(diff.max()) <= 2 * lr + 1e-4, name
                disagreeing += int((diff > 0.1 * lr).sum())
                total += diff.numel()
    # counted over all weights: a tensor of 8 weights would make one flip 12.5%
    assert disagreeing <= 0.1 * max(total, 1), f"{disagreeing} of {total} weights disagree"
    assert rounds > 0


async def second_step_rounds(party) -> int:
    """The rounds of a small-preset step (batch 32, Adam), the second of two (the first
    makes the moments), the parties lined up by a reveal before it."""
    from gan.train import TrainConfig, initial_models

    cfg = TrainConfig(preset="small", batch_size=32, seed=1)
    preset = cfg.preset_()
    d_model, g_model = initial_models(cfg)
    d, g = await gan.secure(d_model, party, src=0), await gan.secure(g_model, party, src=0)
    opt_d, opt_g = optim.Adam(d.parameters(), 2e-4, (0.5, 0.999)), optim.Adam(g.parameters(), 2e-4, (0.5, 0.999))
    gen = torch.Generator().manual_seed(1)
    rounds = 0
    for _ in range(2):
        images = torch.rand(32, preset.channels, preset.image_size, preset.image_size, generator=gen) * 2 - 1
        x = await party.input(images if party.id == 0 else None, src=0)
        z = await party.input(torch.randn(32, preset.nz, 1, 1, generator=gen) if party.id == 0 else None, src=0)
        await (await party.input(torch.zeros(1) if party.id == 0 else None, src=0)).reveal()
        before = party.stats.rounds
        await train_step(d, g, opt_d, opt_g, x, z)
        rounds = party.stats.rounds - before
    return rounds


def test_a_small_step_takes_149_rounds_with_its_material_fetched_ahead():
    """docs/BENCHMARKS.md's count, as a training job streams its material: a guard against
    rounds creeping back (issue 20 asks for at most 150). The generator's tanh and the
    discriminator's Adam compare truncations' outputs by their masks' bits (kind MaskBits:
    no private AND round). On loopback the generator's two batch norms (16,384 and 32,768
    elements) take gamma / std first (ops.policy.GAIN_FUSION: the fusion's truncation per
    element costs more than its round there): 147 with it."""
    import mpcrt

    assert mpcrt.run_local(second_step_rounds, offline=True, timeout=120) == (149, 149)
