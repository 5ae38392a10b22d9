"""What a training job is: its configuration, its inputs per iteration, its plaintext twin."""

from __future__ import annotations

import asyncio

import pytest
import torch

from gan.train import (
    TrainConfig,
    initial_models,
    iteration_inputs,
    plaintext_training,
    public_inputs_key,
    quality_noise,
    sample_noise,
)


def test_inputs_of_an_iteration_do_not_depend_on_the_run_length_or_the_start():
    images = torch.randn(40, 1, 16, 16)
    short = list(iteration_inputs(TrainConfig(iterations=3, batch_size=4), images))
    long = list(iteration_inputs(TrainConfig(iterations=6, batch_size=4), images))
    resumed = list(iteration_inputs(TrainConfig(iterations=6, batch_size=4), images, first=2))
    assert [i for i, _, _ in resumed] == [2, 3, 4, 5]
    for (i, real, noise), (j, real2, noise2) in zip(short, long[:3]):
        assert i == j and torch.equal(real, real2) and torch.equal(noise, noise2)
    assert torch.equal(resumed[0][1], long[2][1]) and torch.equal(resumed[0][2], long[2][2])
    assert not torch.equal(long[0][2], long[1][2])


def test_config_round_trips_and_checks_its_values():
    cfg = TrainConfig(iterations=5, betas=(0.1, 0.2))
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown training option.*iteration\b"):
        TrainConfig.from_dict({"iteration": 3})
    for bad in ({"iterations": 0}, {"batch_size": -1}, {"optimizer": "rmsprop"}, {"preset": "huge"},
                {"checkpoint_every": -2}):
        with pytest.raises(ValueError):
            TrainConfig.from_dict(bad)
    # Adam's first bias correction 1/(1 - beta1) must fit ops.scale at lr's exponent
    with pytest.raises(ValueError, match=r"betas\[0\] is at most 0.999"):
        TrainConfig.from_dict({"betas": [0.9995, 0.999]})
    assert TrainConfig.from_dict({"betas": [0.9995, 0.999], "optimizer": "sgd"}).betas[0] == 0.9995
    TrainConfig.from_dict({"betas": [0.999, 0.999]})


def test_the_plaintext_twin_is_deterministic():
    cfg = TrainConfig(iterations=2, batch_size=4, samples=3)
    images = torch.rand(20, 1, 16, 16) * 2 - 1
    a = asyncio.run(plaintext_training(cfg, images))
    b = asyncio.run(plaintext_training(cfg, images))
    assert a["curves"] == b["curves"] and torch.equal(a["samples"], b["samples"])
    assert a["samples"].shape == (3, 1, 16, 16) and sample_noise(cfg).shape == (3, cfg.preset_().nz, 1, 1)


def test_the_owners_inputs_come_from_its_key_one_stream_each():
    cfg = TrainConfig(iterations=2, batch_size=4, samples=3, seed=5)
    images = torch.randn(40, 1, 16, 16)

    def inputs(key):
        d, g = initial_models(cfg, key)
        return {"d": torch.cat([p.detach().reshape(-1) for p in d.parameters()]),
                "g": torch.cat([p.detach().reshape(-1) for p in g.parameters()]),
                "real": torch.stack([real for _, real, _ in iteration_inputs(cfg, images, key=key)]),
                "noise": torch.stack([z for _, _, z in iteration_inputs(cfg, images, key=key)]),
                "samples": sample_noise(cfg, key), "quality": quality_noise(cfg, key)}

    mine, again, other = inputs(b"k" * 32), inputs(b"k" * 32), inputs(b"j" * 32)
    public = inputs(None)
    for name, value in mine.items():
        assert torch.equal(value, again[name]), name  # the owner rebuilds them: resume, the twin
        assert not torch.equal(value, other[name]), name
        assert not torch.equal(value, public[name]), name
    assert torch.equal(public["noise"], inputs(public_inputs_key(cfg.seed))["noise"])
    # streams are apart: the sample noise is not the first iteration's noise
    assert not torch.equal(mine["samples"].reshape(-1)[:10], mine["noise"].reshape(-1)[:10])


def test_the_plaintext_twin_draws_its_inputs_from_the_key():
    cfg = TrainConfig(iterations=1, batch_size=4, samples=3, seed=2)
    images = torch.rand(20, 1, 16, 16) * 2 - 1
    public = asyncio.run(plaintext_training(cfg, images))
    same = asyncio.run(plaintext_training(cfg, images, key=public_inputs_key(cfg.seed)))
    secret = asyncio.run(plaintext_training(cfg, images, key=b"k" * 32))
    assert same["curves"] == public["curves"] and torch.equal(same["samples"], public["samples"])
    assert not torch.equal(secret["samples"], public["samples"])


def test_the_plaintext_twin_runs_the_torch_model_in_float64():
    import gan
    from gan import models

    torch.manual_seed(0)
    model = models.discriminator(models.PRESETS["small"]).eval()
    twin = gan.plaintext(model).eval()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want = model.double()(x)
    got = asyncio.run(twin.forward(x))
    assert got.dtype == torch.float64 and float((got - want).abs().max()) < 1e-12


def test_perturbed_gradients_move_each_gradient_by_at_most_a_unit_then_step():
    from gan import optim
    from gan.nn.module import Parameter
    from gan.train import PerturbedGradients

    p = Parameter(torch.zeros(1000, dtype=torch.float64))
    p.grad = torch.zeros(1000, dtype=torch.float64)
    opt = PerturbedGradients(optim.SGD([p], 1.0, 0.0), torch.Generator().manual_seed(1), 2.0 ** -16)
    asyncio.run(opt.step())
    moved = -p.data  # lr 1: the parameter moved by minus the noisy gradient
    assert 0 < float(moved.abs().max()) <= 2.0 ** -16 and float(moved.abs().mean()) > 2.0 ** -18
