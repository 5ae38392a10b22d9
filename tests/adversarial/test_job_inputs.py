"""What the owner's job tells the servers, and what the servers take from the owner (issue 23, items 2-4).

A curious server keeps every argument it gets and every share it holds: from them it must not
rebuild the owner's inputs (its noise, its initial weights), nor test a guess of the data, nor
learn differences of values from two runs of one job file. And a server takes from the owner
only a job id it can file checkpoints under inside its state directory, and only checkpoints
that are plain data. `lpgan train` runs here with both servers in this process
(mpcrt.run_with_owner in place of the network), the owner's code as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from gan import checkpoint, launch, models
from gan.checkpoint import CheckpointError
from gan.owner_jobs import fingerprint, inputs_key, owner_secret, train_in_process
from gan.server_jobs import PROGRAMS, JobArgsError
from gan.train import TrainConfig, initial_models, iteration_inputs, load_images, sample_noise
from mpcrt import run_with_owner
from tests.gan.test_launch import Started, capture_starts, job_config

SEED = 3  # the job file's seed: a server may well guess it


class RecordingClient:
    """The owner's client, keeping a copy of every input it shares (what a server must not rebuild)."""

    def __init__(self, client: Any, shared: dict[str, torch.Tensor]) -> None:
        self._client, self._shared = client, shared

    def share(self, values: dict[str, torch.Tensor]) -> None:
        self._shared.update({k: v.detach().clone() for k, v in values.items()})
        self._client.share(values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def run_here(state: Path, runs: list[dict[str, Any]]):
    """A launch._run that runs the job in this process; each run's arguments as the servers got
    them, its seeds, the owner's shared inputs, its result and its servers' state folder."""

    def run(job, program, args, seeds, limits, on_event, progress, record, drive, dealer_workers=0):
        seen: list[dict] = []
        shared: dict[str, torch.Tensor] = {}
        folder = state / f"run{len(runs)}"

        async def curious(party, party_args):  # honest, but it keeps what it was told
            seen.append(dict(party_args))
            await PROGRAMS[program](party, party_args)

        async def owner(client, _):
            return await drive(RecordingClient(client, shared))

        try:
            result, _, _ = run_with_owner(curious, owner, {**args, "state_dir": str(folder)}, seeds=seeds,
                                          frac_bits=job.frac_bits, truncation=job.truncation,
                                          comparison=job.comparison, dealer_limits=limits)
        finally:
            progress.close()
        runs.append({"args": seen, "seeds": seeds, "shared": shared, "result": result, "state": folder})
        return result

    return run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> dict[str, Any]:
    """One job file run twice by `lpgan train` (with its plaintext twin), as the servers saw it."""
    folder = tmp_path_factory.mktemp("owner")
    job = job_config(folder, seed=SEED, twin=True)
    runs: list[dict[str, Any]] = []
    twin_keys: list[bytes] = []
    twin = launch.plaintext_training

    async def recorded_twin(*args, **kwargs):
        twin_keys.append(kwargs["key"])
        return await twin(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch, "_run", run_here(folder / "servers", runs))
        patch.setattr(launch, "plaintext_training", recorded_twin)
        for _ in range(2):
            assert launch.train(job) == 0
    return {"job": job, "runs": runs, "twin_keys": twin_keys, "secret": owner_secret(job.certs)}


def random_inputs(shared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The owner's drawn inputs: noise and initial weights (not its images, which the servers
    never get; not the constants of an architecture, such as a batch norm's running statistics)."""
    return {k: v for k, v in shared.items() if not k.startswith("real/") and v.unique().numel() > 1}


def rebuilt_inputs(cfg: TrainConfig, images: torch.Tensor, key: bytes | None) -> list[torch.Tensor]:
    d, g = initial_models(cfg, key)
    return [*d.state_dict().values(), *g.state_dict().values(), sample_noise(cfg, key),
            *(noise for _, _, noise in iteration_inputs(cfg, images, key=key))]


def seeded_inputs(cfg: TrainConfig) -> list[torch.Tensor]:
    """The inputs as lpgan drew them before issue 23: from torch generators seeded by the seed."""
    p = cfg.preset_()
    gen = torch.Generator().manual_seed(cfg.seed)
    d, g = models.init_weights(models.discriminator(p), gen), models.init_weights(models.generator(p), gen)
    noise = torch.Generator().manual_seed(cfg.seed + 3)
    return [*d.state_dict().values(), *g.state_dict().values(),
            torch.randn(cfg.samples, p.nz, 1, 1, generator=torch.Generator().manual_seed(cfg.seed + 4)),
            *(torch.randn(cfg.batch_size, p.nz, 1, 1, generator=noise) for _ in range(cfg.iterations))]


def found(inputs: dict[str, torch.Tensor], guesses: list[torch.Tensor]) -> list[str]:
    return [k for k, v in inputs.items() if any(g.shape == v.shape and torch.equal(g.to(v.dtype), v) for g in guesses)]


def test_a_server_rebuilds_none_of_the_owners_inputs_from_its_arguments(two_runs):
    run = two_runs["runs"][0]
    told = run["args"][0]
    assert run["args"][1] == told and "seed" not in told["train"]
    inputs = random_inputs(run["shared"])
    assert len(inputs) > 10 and any(k.startswith("noise/") for k in inputs) and "samples/noise" in inputs
    # the server knows the shapes, so the batch size and the sample count, and tries seeds
    cfg = TrainConfig.from_dict({**told["train"], "batch_size": 4, "samples": 4})
    images = load_images("mnist", cfg.preset_().image_size)
    guesses = []
    for seed in {*range(8), SEED}:
        guess = TrainConfig(**{**cfg.__dict__, "seed": seed})
        guesses += rebuilt_inputs(guess, images, None) + seeded_inputs(guess)
    assert found(inputs, guesses) == []
    # what it lacks is the owner's secret: with it, every one of them follows
    key = inputs_key(two_runs["secret"], SEED)
    assert sorted(found(inputs, rebuilt_inputs(TrainConfig(**{**cfg.__dict__, "seed": SEED}), images, key))) == \
        sorted(inputs)
    assert two_runs["twin_keys"] == [key, key]  # the plaintext twin trained on those very inputs


def test_the_job_id_a_server_sees_is_keyed_by_the_owners_secret(two_runs, tmp_path, monkeypatch):
    job = two_runs["job"]
    seen = two_runs["runs"][0]["args"][0]["fingerprint"]
    images = load_images("mnist", job.train.preset_().image_size)
    guess = fingerprint({"program": "train", "train": job.train.as_dict(), **job.protocol()}, images)
    assert len(seen) == 64 and seen != guess.hex()
    starts = capture_starts(monkeypatch)
    other = job_config(tmp_path, seed=SEED, twin=True)  # the same job file, another owner
    with pytest.raises(Started):
        launch.train(other)
    assert starts[0]["args"]["fingerprint"] != seen
    assert starts[0]["args"]["train"] == two_runs["runs"][0]["args"][0]["train"]


def test_two_runs_of_one_job_file_show_a_server_unrelated_shares(two_runs):
    first, second = two_runs["runs"]
    assert set(first["seeds"]).isdisjoint(second["seeds"])
    folders = [next(run["state"].iterdir()) for run in (first, second)]
    for party in (0, 1):
        a, b = (checkpoint.read(f / f"party{party}-0000001.pt")["models"] for f in folders)
        for m in a:
            for n, entry in a[m].items():
                same = (entry["share"] == b[m][n]["share"]).double().mean()
                assert float(same) < 0.01, (party, m, n)
    # while the values agree up to the dealer truncation's rounding (it depends on the masks)
    for model in ("generator", "discriminator"):
        one, two = (run["result"][model].state_dict() for run in (first, second))
        assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-2, model


CFG = TrainConfig(iterations=1, batch_size=4, samples=4, checkpoint_every=1)


@pytest.fixture(scope="module")
def images():
    return load_images("mnist", CFG.preset_().image_size)[:16]


@pytest.mark.parametrize("job", ["../../escape0123", "../../escape0123" + "0" * 48, "A" * 64, "ab" * 16, 12345])
def test_an_owner_id_that_is_not_a_hex_digest_is_refused(images, tmp_path, job):
    state = tmp_path / "state" / "job"
    with pytest.raises(JobArgsError, match="not 64 lowercase hex digits"):
        train_in_process(CFG, images, state, job=job)
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_a_job_folder_that_resolves_outside_the_state_directory_is_refused(images, tmp_path):
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.mkdir()
    job = "0123456789abcdef" * 4
    (state / job[:16]).symlink_to(outside)
    with pytest.raises(JobArgsError, match="not directly in the state directory"):
        train_in_process(CFG, images, state, job=job)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("args", [{"resume_from": -1}, {"resume_from": 99}, {"resume_from": "1"},
                                  {"keep_checkpoints": 0}, {"keep_checkpoints": 10**9}])
def test_owner_arguments_out_of_range_are_refused(images, tmp_path, args):
    async def owner(client, _):
        return None

    full = {"train": CFG.for_servers(), "resume_from": 0, "fingerprint": "ab" * 32, "keep_checkpoints": 2,
            "state_dir": str(tmp_path), **args}
    with pytest.raises(JobArgsError, match=next(iter(args))):
        run_with_owner(PROGRAMS["train"], owner, full, timeout=20)


@pytest.mark.parametrize("frac_bits", [8, 19])
def test_a_scale_outside_what_trains_is_refused_by_the_servers(tmp_path, frac_bits):
    async def owner(client, _):
        return None

    full = {"train": CFG.for_servers(), "resume_from": 0, "fingerprint": "ab" * 32, "keep_checkpoints": 2,
            "state_dir": str(tmp_path)}
    with pytest.raises(JobArgsError, match=f"frac_bits {frac_bits} is outside 12..18"):
        run_with_owner(PROGRAMS["train"], owner, full, frac_bits=frac_bits, timeout=20)
    with pytest.raises(JobArgsError, match=f"frac_bits {frac_bits} is outside 12..18"):
        run_with_owner(PROGRAMS["synthesize"], owner, {"preset": "small", "batches": 1}, frac_bits=frac_bits,
                       timeout=20)


@pytest.mark.parametrize("args", [{"preset": "huge"}, {"preset": ["small"]}, {"batches": 0}, {"batches": 1.5},
                                  {"batches": 10**12}, {"batches": True}])
def test_synthesis_arguments_out_of_range_are_refused(args):
    async def owner(client, _):
        return None

    with pytest.raises(JobArgsError, match=next(iter(args))):
        run_with_owner(PROGRAMS["synthesize"], owner, {"preset": "small", "batches": 2, **args}, timeout=20)


class RunsCode:
    """Loaded unsafely, it creates a marker file (a harmless stand-in for a shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_checkpoint_is_refused_on_resume_and_does_not_run(images, tmp_path):
    job = os.urandom(32).hex()
    folder = tmp_path / job[:16]
    folder.mkdir()
    marker = tmp_path / "ran"
    for party in (0, 1):
        torch.save({"iteration": 1, "models": {}, "optimizers": {}, "extra": {"fingerprint": job},
                    "payload": RunsCode(marker)}, folder / f"party{party}-0000001.pt")
    with pytest.raises(CheckpointError, match="not plain data"):
        train_in_process(CFG, images, tmp_path, first=1, job=job)
    assert not marker.exists()
