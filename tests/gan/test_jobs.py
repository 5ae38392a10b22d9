"""The edge servers' GAN programs, driven by the owner in one process (mpcrt.run_with_owner)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from gan import models
from gan.checkpoint import CheckpointError
from gan.jobs import synthesize_program
from gan.owner import drive_synthesis, train_in_process
from gan.train import TrainConfig, initial_models, load_images, plaintext_training
from mpcrt import run_with_owner

SEEDS = (b"0" * 16, b"1" * 16)
CFG = TrainConfig(iterations=4, batch_size=4, samples=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def images():
    return load_images("mnist", CFG.preset_().image_size)[:64]


@pytest.fixture(scope="module")
def straight(images, tmp_path_factory):
    return train_in_process(CFG, images, tmp_path_factory.mktemp("straight"), seeds=SEEDS)


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.double() - sb[k].double()).abs().max()) for k, v in a.state_dict().items())


def test_training_follows_its_plaintext_twin(straight, images):
    twin = asyncio.run(plaintext_training(CFG, images))
    assert len(straight["curves"]["d_real"]) == CFG.iterations
    for key in ("d_real", "d_fake"):
        assert max(abs(a - b) for a, b in zip(straight["curves"][key], twin["curves"][key])) < 2e-2, key
    assert straight["samples"].shape == (4, 1, 16, 16)
    assert float((straight["samples"] - twin["samples"]).abs().max()) < 5e-2
    # every parameter and running statistic came back, and training moved them
    d0, g0 = initial_models(CFG)
    assert set(straight["generator"].state_dict()) == set(g0.state_dict())
    assert max_difference(straight["discriminator"], d0) > 1e-3 and max_difference(straight["generator"], g0) > 1e-3


def test_a_resumed_run_ends_with_the_same_parameters_bit_for_bit(straight, images, tmp_path):
    partial = TrainConfig(**{**CFG.__dict__, "iterations": 4})
    state = tmp_path / "state"
    train_in_process(TrainConfig(**{**CFG.__dict__, "iterations": 2}), images, state, seeds=SEEDS)
    resumed = train_in_process(partial, images, state, first=2, seeds=SEEDS)
    assert max_difference(resumed["generator"], straight["generator"]) == 0.0
    assert max_difference(resumed["discriminator"], straight["discriminator"]) == 0.0
    assert torch.equal(resumed["samples"], straight["samples"])
    assert resumed["curves"]["d_real"] == straight["curves"]["d_real"][2:]


def test_other_dealer_seeds_change_only_the_rounding(straight, images, tmp_path):
    other = train_in_process(CFG, images, tmp_path, seeds=(b"2" * 16, b"3" * 16))
    difference = max_difference(other["generator"], straight["generator"])
    assert 0.0 < difference < 1e-2


def test_resuming_without_that_checkpoint_names_what_is_there(images, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint of iteration 2"):
        train_in_process(CFG, images, tmp_path / "empty", first=2, seeds=SEEDS)


def test_synthesis_matches_the_generator_in_torch():
    p = models.PRESETS["small"]
    _, generator = initial_models(CFG)
    noise = torch.randn(10, p.nz, 1, 1, generator=torch.Generator().manual_seed(5))

    async def owner(client, args):
        return await drive_synthesis(client, generator, noise, batch_size=4)

    images, _, _ = run_with_owner(synthesize_program, owner, {"preset": "small", "batches": 3})
    with torch.no_grad():
        expected = generator.eval()(noise)
    assert images.shape == expected.shape == (10, 1, 16, 16)
    assert float((images - expected).abs().max()) < 1e-2
