"""What a training job is: its configuration, its inputs per iteration, its plaintext twin."""

from __future__ import annotations

import asyncio

import pytest
import torch

from gan.train import TrainConfig, iteration_inputs, plaintext_training, sample_noise


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


def test_the_plaintext_twin_is_deterministic():
    cfg = TrainConfig(iterations=2, batch_size=4, samples=3)
    images = torch.rand(20, 1, 16, 16) * 2 - 1
    a = asyncio.run(plaintext_training(cfg, images))
    b = asyncio.run(plaintext_training(cfg, images))
    assert a["curves"] == b["curves"] and torch.equal(a["samples"], b["samples"])
    assert a["samples"].shape == (3, 1, 16, 16) and sample_noise(cfg).shape == (3, cfg.preset_().nz, 1, 1)
