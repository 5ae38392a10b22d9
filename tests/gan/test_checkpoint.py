"""Each party's checkpoints: atomic writes, the last two kept, clear errors."""

from __future__ import annotations

import pytest
import torch

from gan import checkpoint
from gan.checkpoint import CheckpointError, CheckpointStore


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "party0.pt"
    torch.save({"iteration": 1}, path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="previous one is kept"):
        checkpoint.save(path, 2, {}, {}, {})
    monkeypatch.undo()
    assert torch.load(path)["iteration"] == 1 and not path.with_suffix(".pt.tmp").exists()


def test_the_store_keeps_the_last_two_and_names_what_it_has(tmp_path):
    store = CheckpointStore(tmp_path / "job", party_id=1)
    assert store.available() == []
    for i in (2, 4, 6):
        store.save(i, {}, {})
    assert store.available() == [4, 6]
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["party1-0000004.pt", "party1-0000006.pt"]
    store.load(4, None, {}, {})
    with pytest.raises(CheckpointError, match=r"no checkpoint of iteration 2 .*it has \[4, 6\]"):
        store.load(2, None, {}, {})
    # another party's files are not this party's
    assert CheckpointStore(tmp_path / "job", party_id=0).available() == []


def test_a_checkpoint_of_another_job_is_refused(tmp_path):
    CheckpointStore(tmp_path, party_id=0, fingerprint="job-a").save(3, {}, {})
    CheckpointStore(tmp_path, party_id=0, fingerprint="job-a").load(3, None, {}, {})
    with pytest.raises(CheckpointError, match="another job"):
        CheckpointStore(tmp_path, party_id=0, fingerprint="job-b").load(3, None, {}, {})
