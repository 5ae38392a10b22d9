"""The owner's side: seeds from its secret and the job's fingerprint."""

from __future__ import annotations

import stat

import pytest
import torch

from gan.owner import fingerprint, job_seeds, owner_secret


def test_the_owner_secret_is_made_once_and_private(tmp_path):
    first = owner_secret(tmp_path)
    assert len(first) == 32 and owner_secret(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "owner.secret").stat().st_mode) == 0o600
    (tmp_path / "owner.secret").write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        owner_secret(tmp_path)


def test_seeds_change_with_anything_that_determines_the_values():
    data = torch.arange(6.0)
    base = fingerprint({"lr": 0.1}, data)
    assert fingerprint({"lr": 0.1}, data.clone()) == base
    assert fingerprint({"lr": 0.2}, data) != base
    changed = data.clone()
    changed[3] += 1e-6
    assert fingerprint({"lr": 0.1}, changed) != base
    assert fingerprint({"lr": 0.1}, data.reshape(2, 3)) != base
    assert fingerprint({"lr": 0.1}, torch.tensor(1.0)) != fingerprint({"lr": 0.1}, torch.tensor([1.0]))
    secret = b"k" * 32
    s0, s1 = job_seeds(secret, base)
    assert (s0, s1) == job_seeds(secret, base) and s0 != s1 and len(s0) == 16
    assert job_seeds(secret, fingerprint({"lr": 0.2}, data)) != (s0, s1)
    assert job_seeds(b"j" * 32, base) != (s0, s1)


def test_servers_keep_enough_checkpoints_for_the_owners_record():
    from gan.owner import WINDOW, checkpoints_to_keep
    from gan.train import TrainConfig

    # the servers may be WINDOW iterations past the owner's record of their last checkpoint
    for every in (1, 2, 3, 10):
        keep = checkpoints_to_keep(TrainConfig(checkpoint_every=every))
        assert (keep - 1) * every >= WINDOW
    assert checkpoints_to_keep(TrainConfig(checkpoint_every=0)) == 2
