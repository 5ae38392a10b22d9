"""How much dealer material a GAN job may ask for: the bound the owner's dealer enforces.

A server that runs modified code could ask the dealer (the owner's machine) for material
without end. The owner bounds the job's total by what its program needs: MPC control flow
does not depend on the data, so a dry run on zero shares (mpcrt.offline.record_plan, in
this process) gives the material of one training iteration. It runs at batch sizes 1 and 2,
which costs seconds where one at the job's batch size could cost minutes: each request's
size is affine in the batch (the model's parameters, plus per-image activations), so the
two give the slope and the intercept. The bound is twice that line at the job's batch
size (ops choose their protocols by size, so the job's own plan may differ a little), for
every iteration and the samples. The dry runs' results are kept on disk (`cache_dir()`),
keyed by the model, the options and a digest of this code (a large model's dry run is long), and
they repeat only when one of those changes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import torch

import gan
from gan import models
from gan.step import train_step
from gan.train import TrainConfig, optimizers
from mpcrt import ArithmeticShare, Party, ring
from mpcrt.dealer import DealerLimits
from mpcrt.dealer.admission import material_bytes
from mpcrt.offline import record_plan
from transports.wan import resolve_network

MARGIN = 2


def _zeros(party: Party, shape: tuple[int, ...]) -> ArithmeticShare:
    return ArithmeticShare(party, torch.zeros(shape, dtype=torch.int64), party.frac_bits, torch.float32)


async def _one_iteration(party: Party, cfg: TrainConfig, batch: int) -> None:
    """A training iteration as gan.server_jobs runs it, on zero shares (no owner, no inputs)."""
    p = cfg.preset_()
    d = gan.placeholder(models.discriminator(p), party)
    g = gan.placeholder(models.generator(p), party)
    opt_d, opt_g = optimizers(cfg, d, g)
    real = _zeros(party, (batch, p.channels, p.image_size, p.image_size))
    await train_step(d, g, opt_d, opt_g, real, _zeros(party, (batch, p.nz, 1, 1)))


async def _one_synthesis(party: Party, preset: str, batch: int) -> None:
    g = gan.placeholder(models.generator(models.PRESETS[preset]), party)
    g.eval()
    await g.forward(_zeros(party, (batch, models.PRESETS[preset].nz, 1, 1)))


def _plan_bytes(program: Any, *args: Any, protocol: dict[str, Any]) -> int:
    plan = asyncio.run(record_plan(program, *args, frac_bits=protocol.get("frac_bits", ring.DEFAULT_FRAC_BITS),
                                   truncation=protocol.get("truncation", "dealer"),
                                   comparison=protocol.get("comparison", "auto"),
                                   network=resolve_network(protocol.get("network")),
                                   owner_network=resolve_network(protocol.get("owner_network"))))
    return sum(material_bytes(request) for request in plan)


def _at(batch: int, one: int, two: int) -> int:
    """The affine fit through (1, one) and (2, two), at `batch` (never below either point)."""
    return max(one, two, one + (two - one) * (batch - 1))


Progress = Callable[[str], None] | None  # told before a dry run that was not cached


def cache_dir() -> Path:
    """Where the dry runs' results are kept: $LPGAN_CACHE, else $XDG_CACHE_HOME/lpgan or
    ~/.cache/lpgan."""
    if os.environ.get("LPGAN_CACHE"):
        return Path(os.environ["LPGAN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpgan"


@functools.cache
def _code_digest() -> str:
    """SHA-256 of the runtime's and the GAN library's source: a plan changes with either."""
    h = hashlib.sha256()
    for package in ("mpcrt", "gan", "transports"):
        root = Path(__file__).resolve().parent.parent / package
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _points(what: list[Any], measure: Callable[[int], int], progress: Progress) -> tuple[int, int]:
    """The material at batch 1 and 2 of `what` (a program and its options), from the cache
    or by dry runs (then cached; a cache that cannot be read or written is skipped)."""
    key = hashlib.sha256(msgpack.packb([*what, _code_digest()])).hexdigest()[:32]
    path = cache_dir() / f"budget-{key}.json"
    try:
        cached = json.loads(path.read_text())
        if (isinstance(cached, list) and len(cached) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cached)):
            return cached[0], cached[1]
    except (OSError, ValueError):
        pass
    if progress is not None:
        progress(f"measuring the dealer material the job may need ({what[0]}, {what[1]}): a dry run, kept "
                 f"in {cache_dir()} for later jobs")
    points = measure(1), measure(2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(points))
        os.replace(tmp, path)
    except OSError:
        pass
    return points


@functools.cache
def _iteration_points(preset: str, optimizer: str, protocol: bytes, progress: Progress = None) -> tuple[int, int]:
    cfg = TrainConfig(preset=preset, optimizer=optimizer)
    return _points(["training iteration", preset, optimizer, protocol],
                   lambda batch: _plan_bytes(_one_iteration, cfg, batch, protocol=msgpack.unpackb(protocol)), progress)


@functools.cache
def _synthesis_points(preset: str, protocol: bytes, progress: Progress = None) -> tuple[int, int]:
    return _points(["synthesis", preset, protocol],
                   lambda batch: _plan_bytes(_one_synthesis, preset, batch, protocol=msgpack.unpackb(protocol)),
                   progress)


def _key(protocol: dict[str, Any]) -> bytes:
    """The options that decide the plan, as a key of the caches above."""
    return msgpack.packb(dict(sorted(protocol.items())))


def synthesis_bytes(preset: str, images: int, batch_size: int, protocol: dict[str, Any],
                    progress: Progress = None) -> int:
    """The bound on the material of synthesizing `images` in batches of `batch_size`."""
    one, two = _synthesis_points(preset, _key(protocol), progress)
    full, rest = divmod(images, batch_size)
    return MARGIN * (full * _at(batch_size, one, two) + (_at(rest, one, two) if rest else 0))


def training_limits(cfg: TrainConfig, protocol: dict[str, Any], first: int = 0,
                    progress: Progress = None) -> DealerLimits:
    """The dealer's limits for training iterations first..cfg.iterations-1 and the samples."""
    one, two = _iteration_points(cfg.preset, cfg.optimizer, _key(protocol), progress)
    iterations = MARGIN * (cfg.iterations - first) * _at(cfg.batch_size, one, two)
    samples = synthesis_bytes(cfg.preset, cfg.samples, cfg.samples, protocol, progress)
    return DealerLimits(job_bytes=iterations + samples)


def synthesis_limits(preset: str, images: int, batch_size: int, protocol: dict[str, Any],
                     progress: Progress = None) -> DealerLimits:
    return DealerLimits(job_bytes=synthesis_bytes(preset, images, batch_size, protocol, progress))
