"""Each party's checkpoint: its shares of the models and of the optimizer state.

A party writes only its own shares (random-looking on their own), to a temporary file
that is then renamed into place, so a crash or a full disk never leaves a half-written
checkpoint. A `CheckpointStore` keeps a party's last few checkpoints: the owner resumes
from the last iteration both parties confirmed, which the parties may have passed by a few
checkpoints. Each checkpoint names its job (the owner's keyed id of it), and another
job's is refused.

A checkpoint holds plain data only (tensors, ints, floats, strings, lists and dicts; a
dtype by its name), written and read with torch's `weights_only` loader: a file that
would need to run code to load (any other pickle) is refused, never run.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from gan.nn.module import Module
from gan.optim import Optimizer
from mpcrt import ArithmeticShare, MPCError


class CheckpointError(MPCError):
    """A checkpoint is missing, unreadable, or from another point of the run."""


def _pack(x: Any) -> Any:
    if isinstance(x, ArithmeticShare):
        return {"share": x.value.clone(), "frac_bits": x.frac_bits, "dtype": str(x.dtype).removeprefix("torch.")}
    return x


def _unpack(party: Any, x: Any) -> Any:
    if isinstance(x, dict) and "share" in x:
        share, frac_bits, dtype = x["share"], x["frac_bits"], getattr(torch, str(x["dtype"]), None)
        if not (isinstance(share, torch.Tensor) and share.dtype == torch.int64 and isinstance(frac_bits, int)
                and 0 <= frac_bits < 64 and isinstance(dtype, torch.dtype)):
            raise ValueError(f"a share entry is malformed (dtype {x['dtype']!r}, frac_bits {frac_bits!r})")
        return ArithmeticShare(party, share, frac_bits, dtype)
    return x


def _module_state(m: Module) -> dict[str, Any]:
    state = {f"param:{n}": _pack(p.data) for n, p in m.named_parameters()}
    for i, layer in enumerate(getattr(m, "layers", [])):
        for name in ("running_mean", "running_var"):
            if hasattr(layer, name):
                state[f"buffer:{i}.{name}"] = _pack(getattr(layer, name))
    return state


def _load_module(party: Any, m: Module, state: dict[str, Any]) -> None:
    for n, p in m.named_parameters():
        p.data = _unpack(party, state[f"param:{n}"])
    for i, layer in enumerate(getattr(m, "layers", [])):
        for name in ("running_mean", "running_var"):
            if hasattr(layer, name):
                setattr(layer, name, _unpack(party, state[f"buffer:{i}.{name}"]))


def save(path: Path, iteration: int, models: dict[str, Module], optimizers: dict[str, Optimizer],
         extra: dict[str, Any]) -> Path:
    state = {"iteration": iteration, "models": {k: _module_state(m) for k, m in models.items()},
             "optimizers": {k: {n: _pack(v) if not isinstance(v, dict) else {i: _pack(t) for i, t in v.items()}
                                for n, v in o.state().items()} for k, o in optimizers.items()},
             "extra": extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: the previous checkpoint stays until this one is whole
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        free = shutil.disk_usage(path.parent).free
        raise CheckpointError(f"could not write checkpoint {path} ({reason}; {free / 1e6:.1f} MB free there); "
                              "the previous one is kept; free disk space and resume") from exc
    return path


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's plain contents, by torch's weights_only loader: a file that needs more
    (a pickle that would run code) is refused before anything in it runs."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume")
    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {path} is not plain data (loading it would run code: "
                              f"{str(exc).splitlines()[0]}); refused; remove it and start without --resume") from exc
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from exc
    if not (isinstance(state, dict) and isinstance(state.get("iteration"), int)
            and all(isinstance(state.get(k), dict) for k in ("models", "optimizers", "extra"))):
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this program (no iteration, models, "
                              "optimizers and extra); refused")
    return state


def load(path: Path, party: Any, models: dict[str, Module], optimizers: dict[str, Optimizer]) -> tuple[int, dict]:
    """Restore shares and optimizer state; returns (iteration, extra)."""
    state = read(path)
    try:
        for k, m in models.items():
            _load_module(party, m, state["models"][k])
        for k, o in optimizers.items():
            o.load_state({n: _unpack(party, v) if not isinstance(v, dict)
                          else {i: _unpack(party, t) for i, t in v.items()}
                          for n, v in state["optimizers"][k].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} is malformed ({type(exc).__name__}: {exc}); refused") from exc
    return state["iteration"], state["extra"]


class CheckpointStore:
    """One party's checkpoints of one job, in `directory`, the last `keep` of them."""

    def __init__(self, directory: Path, party_id: int, keep: int = 2, fingerprint: str = "") -> None:
        self.directory = Path(directory)
        self.party_id = party_id
        self.keep = keep
        self.fingerprint = fingerprint  # of the job: a checkpoint of another job is refused

    def path(self, iteration: int) -> Path:
        return self.directory / f"party{self.party_id}-{iteration:07d}.pt"

    def available(self) -> list[int]:
        found = self.directory.glob(f"party{self.party_id}-*.pt") if self.directory.is_dir() else []
        return sorted(int(p.stem.rsplit("-", 1)[1]) for p in found if p.stem.rsplit("-", 1)[1].isdigit())

    def save(self, iteration: int, models: dict[str, Module], optimizers: dict[str, Optimizer]) -> Path:
        path = save(self.path(iteration), iteration, models, optimizers, {"fingerprint": self.fingerprint})
        for old in self.available()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        return path

    def load(self, iteration: int, party: Any, models: dict[str, Module], optimizers: dict[str, Optimizer]) -> None:
        if iteration not in self.available():
            raise CheckpointError(f"party {self.party_id} has no checkpoint of iteration {iteration} in "
                                  f"{self.directory} (it has {self.available() or 'none'}); was the job renamed, "
                                  "or the server started with another --state?")
        saved, extra = load(self.path(iteration), party, models, optimizers)
        if extra.get("fingerprint", "") != self.fingerprint:
            raise CheckpointError(f"{self.path(iteration)} belongs to another job (its configuration or data "
                                  "differ); start this job without --resume")
        if saved != iteration:
            raise CheckpointError(f"{self.path(iteration)} holds iteration {saved}, not {iteration}")
