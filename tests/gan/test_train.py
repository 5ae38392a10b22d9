"""The training job: checkpoints of each party's shares, resume, and a clear error when
the two checkpoints disagree."""

from __future__ import annotations

import shutil

import pytest
import torch

import mpcrt
from gan.checkpoint import CheckpointError
from gan.train import TrainConfig, secure_training


def run(cfg: TrainConfig):
    result, other = mpcrt.run_local(secure_training, cfg, "mnist", timeout=120)
    assert other is None  # only party 0 (the data owner's stand-in) learns the outputs
    return result


def test_resume_continues_where_the_checkpoint_left_off(tmp_path):
    base = dict(iterations=4, batch_size=4, samples=4, progress_every=100, checkpoint_dir=str(tmp_path / "ck"))
    straight = run(TrainConfig(**base))
    run(TrainConfig(**{**base, "iterations": 2, "checkpoint_every": 2}))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["party0.pt", "party1.pt"]
    resumed = run(TrainConfig(**{**base, "resume": True}))
    assert len(resumed["curves"]["d_real"]) == 4
    # the same run, up to the protocols' rounding (fresh dealer randomness after the resume)
    for name, value in straight["generator"].items():
        if value.is_floating_point():
            assert float((resumed["generator"][name] - value).abs().max()) <= 5e-3, name


def test_checkpoints_from_different_points_are_refused(tmp_path):
    ck = tmp_path / "ck"
    base = dict(iterations=2, batch_size=4, samples=4, progress_every=100, checkpoint_dir=str(ck),
                checkpoint_every=1)
    run(TrainConfig(**base))
    shutil.copy(ck / "party0.pt", tmp_path / "party0-at-2.pt")
    run(TrainConfig(**{**base, "iterations": 1}))
    shutil.copy(tmp_path / "party0-at-2.pt", ck / "party0.pt")  # party 0 at 2, party 1 at 1
    with pytest.raises(CheckpointError, match="iteration"):
        run(TrainConfig(**{**base, "iterations": 3, "resume": True}))


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="start without --resume"):
        run(TrainConfig(iterations=1, batch_size=4, samples=4, checkpoint_dir=str(tmp_path / "none"), resume=True))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from gan import checkpoint

    path = tmp_path / "party0.pt"
    torch.save({"iteration": 1}, path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="previous one is kept"):
        checkpoint.save(path, 2, {}, {}, {})
    monkeypatch.undo()
    assert torch.load(path)["iteration"] == 1 and not path.with_suffix(".pt.tmp").exists()
