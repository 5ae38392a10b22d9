"""Each party's checkpoints: atomic writes, the last two kept, plain data only, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

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


class RunsCode:
    """A pickle that, loaded unsafely, creates a marker file (a harmless stand-in for a shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_and_does_not_run(tmp_path, writer):
    store = CheckpointStore(tmp_path / "job", party_id=0, fingerprint="job-a")
    store.save(3, {}, {})
    marker = tmp_path / "ran"
    planted = {"iteration": 3, "models": {}, "optimizers": {}, "extra": {"fingerprint": "job-a"},
               "payload": RunsCode(marker)}
    with open(store.path(3), "wb") as f:
        torch.save(planted, f) if writer == "torch" else pickle.dump(planted, f, protocol=2)
    with pytest.raises(CheckpointError, match="not plain data"):
        store.load(3, None, {}, {})
    assert not marker.exists()
    with open(store.path(3), "rb") as f:  # the payload is live: an unsafe load runs it
        torch.load(f, weights_only=False) if writer == "torch" else pickle.load(f)
    assert marker.exists()


def test_what_a_checkpoint_holds_loads_as_plain_data(tmp_path):
    from mpcrt import ArithmeticShare

    share = ArithmeticShare(None, torch.tensor([1, -2, 3]), 16, torch.float32)
    path = checkpoint.save(tmp_path / "c.pt", 5, {}, {}, {"fingerprint": "f"})
    state = torch.load(path, weights_only=True)
    assert state["iteration"] == 5 and state["extra"] == {"fingerprint": "f"}
    packed = checkpoint._pack(share)
    torch.save(packed, tmp_path / "share.pt")
    back = checkpoint._unpack(None, torch.load(tmp_path / "share.pt", weights_only=True))
    assert torch.equal(back.value, share.value) and back.frac_bits == 16 and back.dtype == torch.float32


def test_a_malformed_checkpoint_is_a_checkpoint_error(tmp_path):
    store = CheckpointStore(tmp_path, party_id=0, fingerprint="job-a")
    store.save(3, {}, {})
    with pytest.raises(CheckpointError, match="malformed"):  # no model 'd' in it
        store.load(3, None, {"d": None}, {})
    entry = {"share": torch.tensor([1]), "frac_bits": 16, "dtype": "load"}  # torch.load is no dtype
    with pytest.raises(ValueError, match="malformed"):
        checkpoint._unpack(None, entry)
    torch.save([1, 2], store.path(3))
    with pytest.raises(CheckpointError, match="not a checkpoint of this program"):
        store.load(3, None, {}, {})
