"""The owner's side: its secret, the keys and ids made from it, fresh seeds, the servers' arguments."""

from __future__ import annotations

import stat

import pytest
import torch

from gan.owner_jobs import fingerprint, inputs_key, job_id, owner_secret, run_seeds, training_args
from gan.train import SERVER_FIELDS, TrainConfig


def test_the_owner_secret_is_made_once_and_private(tmp_path):
    first = owner_secret(tmp_path)
    assert len(first) == 32 and owner_secret(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "owner.secret").stat().st_mode) == 0o600
    (tmp_path / "owner.secret").write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        owner_secret(tmp_path)


def test_the_fingerprint_changes_with_anything_that_determines_the_values():
    data = torch.arange(6.0)
    base = fingerprint({"lr": 0.1}, data)
    assert fingerprint({"lr": 0.1}, data.clone()) == base
    assert fingerprint({"lr": 0.2}, data) != base
    changed = data.clone()
    changed[3] += 1e-6
    assert fingerprint({"lr": 0.1}, changed) != base
    assert fingerprint({"lr": 0.1}, data.reshape(2, 3)) != base
    assert fingerprint({"lr": 0.1}, torch.tensor(1.0)) != fingerprint({"lr": 0.1}, torch.tensor([1.0]))


def test_the_job_id_is_keyed_by_the_owners_secret():
    data = torch.arange(6.0)
    mine = job_id(b"k" * 32, {"lr": 0.1}, data)
    assert mine == job_id(b"k" * 32, {"lr": 0.1}, data.clone())  # stable: --resume finds its checkpoints
    assert len(mine) == 64 and int(mine, 16) >= 0
    # a guess of the job (the description is the servers', the data a guess) does not give the id
    assert mine != fingerprint({"lr": 0.1}, data).hex()
    assert job_id(b"j" * 32, {"lr": 0.1}, data) != mine  # another owner, the same job
    assert job_id(b"k" * 32, {"lr": 0.2}, data) != mine


def test_the_inputs_key_needs_the_secret_and_the_seed():
    key = inputs_key(b"k" * 32, 0)
    assert key == inputs_key(b"k" * 32, 0) and len(key) == 32
    assert inputs_key(b"j" * 32, 0) != key and inputs_key(b"k" * 32, 1) != key
    assert inputs_key(b"k" * 32, -1) != key


def test_every_run_gets_fresh_dealer_seeds():
    first, second = run_seeds(), run_seeds()
    assert len(set(first + second)) == 4 and all(len(s) == 16 for s in first)


def test_the_servers_get_only_what_they_compute_with():
    cfg = TrainConfig(iterations=3, batch_size=4, samples=5, seed=1234, checkpoint_every=1)
    args = training_args(cfg, "ab" * 32, 2)
    assert set(args["train"]) == set(SERVER_FIELDS) and "seed" not in args["train"]
    assert 1234 not in args["train"].values()
    assert args["resume_from"] == 2 and args["fingerprint"] == "ab" * 32
    # the servers' configuration is the owner's, less what only shapes the owner's inputs
    seen = TrainConfig.from_dict(args["train"])
    assert (seen.preset, seen.iterations, seen.lr, seen.betas, seen.checkpoint_every) == \
        (cfg.preset, cfg.iterations, cfg.lr, cfg.betas, cfg.checkpoint_every)


def test_servers_keep_enough_checkpoints_for_the_owners_record():
    from gan.owner_jobs import WINDOW, checkpoints_to_keep

    # the servers may be WINDOW iterations past the owner's record of their last checkpoint
    for every in (1, 2, 3, 10):
        keep = checkpoints_to_keep(TrainConfig(checkpoint_every=every))
        assert (keep - 1) * every >= WINDOW
    assert checkpoints_to_keep(TrainConfig(checkpoint_every=0)) == 2
