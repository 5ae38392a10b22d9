"""The edge servers' GAN programs, driven by the owner in one process (mpcrt.run_with_owner)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gan import checkpoint, models, server_jobs
from gan.checkpoint import CheckpointError
from gan.owner_jobs import drive_synthesis, train_in_process
from gan.server_jobs import JobArgsError, synthesize_program
from gan.train import TrainConfig, initial_models, load_images, plaintext_training
from mpcrt import run_with_owner

SEEDS = (b"0" * 16, b"1" * 16)
KEY = bytes(range(32))  # the owner's inputs key (gan.owner_jobs.inputs_key)
CFG = TrainConfig(iterations=4, batch_size=4, samples=4, checkpoint_every=2)


@dataclass
class Run:
    result: dict
    state: Path


@pytest.fixture(scope="module")
def images():
    return load_images("mnist", CFG.preset_().image_size)[:64]


@pytest.fixture(scope="module")
def straight(images, tmp_path_factory) -> Run:
    state = tmp_path_factory.mktemp("straight")
    return Run(train_in_process(CFG, images, state, seeds=SEEDS, key=KEY), state)


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.double() - sb[k].double()).abs().max()) for k, v in a.state_dict().items())


def checkpoint_shares(state: Path, iteration: int) -> dict[str, list[dict]]:
    """Both parties' entries ({'share', 'frac_bits', 'dtype'}) of every model tensor in a checkpoint."""
    (folder,) = state.iterdir()  # STATE/first digits of the job's id
    models = [checkpoint.read(folder / f"party{i}-{iteration:07d}.pt")["models"] for i in (0, 1)]
    return {f"{m}/{n}": [models[0][m][n], models[1][m][n]] for m in models[0] for n in models[0][m]}


def test_training_follows_its_plaintext_twin(straight, images):
    twin = asyncio.run(plaintext_training(CFG, images, key=KEY))
    result = straight.result
    assert len(result["curves"]["d_real"]) == CFG.iterations
    for key in ("d_real", "d_fake"):
        assert max(abs(a - b) for a, b in zip(result["curves"][key], twin["curves"][key])) < 2e-2, key
    assert result["samples"].shape == (4, 1, 16, 16)
    assert float((result["samples"] - twin["samples"]).abs().max()) < 5e-2
    # every parameter and running statistic came back, and training moved them
    d0, g0 = initial_models(CFG, KEY)
    assert set(result["generator"].state_dict()) == set(g0.state_dict())
    assert max_difference(result["discriminator"], d0) > 1e-3 and max_difference(result["generator"], g0) > 1e-3


def test_a_replay_with_the_same_seeds_repeats_every_share(straight, images, tmp_path):
    """What fresh seeds avoid (lpgan never replays): the same pads on the same values give the
    servers byte-identical shares, and a resumed replay ends bit for bit where the straight run did."""
    train_in_process(TrainConfig(**{**CFG.__dict__, "iterations": 2}), images, tmp_path, seeds=SEEDS, key=KEY)
    replayed, seen = checkpoint_shares(tmp_path, 2), checkpoint_shares(straight.state, 2)
    assert all(torch.equal(replayed[k][i]["share"], seen[k][i]["share"]) for k in seen for i in (0, 1))
    resumed = train_in_process(CFG, images, tmp_path, first=2, seeds=SEEDS, key=KEY)
    assert max_difference(resumed["generator"], straight.result["generator"]) == 0.0
    assert max_difference(resumed["discriminator"], straight.result["discriminator"]) == 0.0
    assert torch.equal(resumed["samples"], straight.result["samples"])
    assert resumed["curves"]["d_real"] == straight.result["curves"]["d_real"][2:]


def test_fresh_seeds_mask_the_same_job_anew_and_a_resume_ends_within_rounding(straight, images, tmp_path):
    """Two runs of one job with fresh seeds (as lpgan runs them): unrelated shares of values
    that agree up to the dealer truncation's rounding (its dropped borrow depends on the mask),
    and a run interrupted at iteration 2 and resumed, fresh seeds again, ends within that
    rounding of the uninterrupted one, not bit for bit."""
    train_in_process(TrainConfig(**{**CFG.__dict__, "iterations": 2}), images, tmp_path, key=KEY)
    fresh, seen = checkpoint_shares(tmp_path, 2), checkpoint_shares(straight.state, 2)
    for name, entries in seen.items():
        for i in (0, 1):  # each server's shares: another mask on every element
            assert float((fresh[name][i]["share"] != entries[i]["share"]).double().mean()) > 0.99, name
        unit = 2.0 ** -entries[0]["frac_bits"]
        value = (entries[0]["share"] + entries[1]["share"]).double() * unit
        again = (fresh[name][0]["share"] + fresh[name][1]["share"]).double() * unit
        assert float((value - again).abs().max()) < 1e-3, name
    resumed = train_in_process(CFG, images, tmp_path, first=2, key=KEY)
    difference = max_difference(resumed["generator"], straight.result["generator"])
    assert 0.0 < difference < 1e-2
    assert max_difference(resumed["discriminator"], straight.result["discriminator"]) < 1e-2
    assert max(abs(a - b) for a, b in zip(resumed["curves"]["d_real"], straight.result["curves"]["d_real"][2:])) < 1e-2


def test_a_checkpoint_holds_values_not_pads_a_resume_with_fresh_seeds_starts_exactly_there(straight, images):
    """Resuming at the last checkpoint (no iteration left) with fresh seeds reveals exactly the
    models the straight run revealed: nothing of the old seeds is needed."""
    resumed = train_in_process(CFG, images, straight.state, first=CFG.iterations, key=KEY)
    assert resumed["curves"]["d_real"] == []
    assert max_difference(resumed["generator"], straight.result["generator"]) == 0.0
    assert max_difference(resumed["discriminator"], straight.result["discriminator"]) == 0.0


def test_resuming_without_that_checkpoint_names_what_is_there(images, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint of iteration 2"):
        train_in_process(CFG, images, tmp_path / "empty", first=2)


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


async def twin_parameters(cfg: TrainConfig, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter of D and G after the plaintext twin's run (the same inputs as KEY's)."""
    from gan.secure import plaintext
    from gan.step import train_step
    from gan.train import iteration_inputs, optimizers

    d_model, g_model = initial_models(cfg, KEY)
    d, g = plaintext(d_model), plaintext(g_model)
    opt_d, opt_g = optimizers(cfg, d, g)
    for _, real, noise in iteration_inputs(cfg, images, key=KEY):
        await train_step(d, g, opt_d, opt_g, real.double(), noise.double())
    return {**{f"d.{n}": p.data.float() for n, p in d.named_parameters()},
            **{f"g.{n}": p.data.float() for n, p in g.named_parameters()}}


def stray(result: dict, twin: dict[str, torch.Tensor], cfg: TrainConfig) -> float:
    """How far the secure run's parameters are from the twin's, over how far the twin's moved."""
    d0, g0 = initial_models(cfg, KEY)
    start = {**{f"d.{n}": p.detach() for n, p in d0.named_parameters()},
             **{f"g.{n}": p.detach() for n, p in g0.named_parameters()}}
    end = {**{f"d.{n}": p.detach() for n, p in result["discriminator"].named_parameters()},
           **{f"g.{n}": p.detach() for n, p in result["generator"].named_parameters()}}
    moved = sum(float((twin[n] - start[n]).abs().sum()) for n in twin)
    return sum(float((end[n] - twin[n]).abs().sum()) for n in twin) / moved


@pytest.mark.slow
def test_the_fixed_point_bits_a_job_file_takes_are_those_that_train(images, tmp_path, monkeypatch):
    """gan.jobfile's [MIN_FRAC_BITS, MAX_FRAC_BITS] (docs/CONFIG.md): at both ends a secure run
    follows its plaintext twin, its parameters straying from the twin's by a fraction of how
    far training moved them (here 0.35 at 12 bits, 0.18 at 16 and 18; with fewer bits the
    rounding's share grows by about half per bit: 0.5 at 11, 0.76 at 10, and at the default lr
    the generator's error equals its training at 12). One bit more than the most fails: batch
    norm's statistics carry 12 more bits, beyond the 30 the ring's encoding takes."""
    from gan.jobfile import MAX_FRAC_BITS, MIN_FRAC_BITS

    cfg = TrainConfig(iterations=2, batch_size=4, samples=4, lr=2e-3)
    twin = asyncio.run(twin_parameters(cfg, images))
    for bits, bound in ((MIN_FRAC_BITS, 0.6), (MAX_FRAC_BITS, 0.3)):
        result = train_in_process(cfg, images, tmp_path / str(bits), seeds=SEEDS, key=KEY, frac_bits=bits)
        assert stray(result, twin, cfg) < bound, bits
    # the servers refuse it up front (gan.server_jobs.check_scale); past that check it fails in batch norm
    with pytest.raises(JobArgsError, match=f"frac_bits {MAX_FRAC_BITS + 1} is outside"):
        train_in_process(cfg, images, tmp_path / "refused", seeds=SEEDS, key=KEY, frac_bits=MAX_FRAC_BITS + 1)
    monkeypatch.setattr(server_jobs, "MAX_FRAC_BITS", 30)
    with pytest.raises(ValueError, match=f"got {MAX_FRAC_BITS + 1 + 12}"):
        train_in_process(cfg, images, tmp_path / "more", seeds=SEEDS, key=KEY, frac_bits=MAX_FRAC_BITS + 1)
