"""The data owner's side of the GAN jobs: what it shares, what it gets back, and its seeds.

The drivers mirror gan.jobs key for key. Training inputs go out a few iterations ahead
of the servers (WINDOW), so the owner's round trip never stalls them, without holding a
long run's data in the servers' memory.

The dealer seeds are derived from a secret of the owner and a fingerprint of everything
that determines the job's values (program, options, configuration, data, initial model),
so a job resumed from a checkpoint gets the very material an uninterrupted run would,
and ends with the same parameters bit for bit. Re-running an identical job replays an
identical transcript (nothing new to learn); any change gives unrelated seeds, so no mask
ever meets two different values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import torch
from torch import nn as tnn

from gan.jobs import d_out_key, noise_key, real_key
from gan.secure import receive_module, share_module
from gan.train import TrainConfig, initial_models, iteration_inputs, sample_noise
from mpcrt import OwnerClient, prg

WINDOW = 4  # iterations of input shared ahead of the servers
SECRET_FILE = "owner.secret"


def checkpoints_to_keep(cfg: TrainConfig) -> int:
    """The servers may be WINDOW iterations ahead of the owner's record of their last common
    checkpoint: each keeps enough checkpoints that the recorded one is still there."""
    if not cfg.checkpoint_every:
        return 2
    return 2 + -(-WINDOW // cfg.checkpoint_every)


def owner_secret(certs: str | Path) -> bytes:
    """The owner's 32-byte secret (certs/owner.secret), made on first use, readable by the owner only."""
    path = Path(certs) / SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    secret = path.read_bytes()
    if len(secret) != 32:
        raise ValueError(f"{path} is damaged ({len(secret)} bytes, expected 32); remove it to make a new one")
    return secret


def fingerprint(description: dict[str, Any], *tensors: torch.Tensor) -> bytes:
    """A digest of a job's description (msgpack-able) and of the tensors it computes on."""
    h = hashlib.sha256(msgpack.packb(description, default=str))
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(msgpack.packb([str(t.dtype), list(t.shape)]))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def job_seeds(secret: bytes, digest: bytes) -> tuple[bytes, bytes]:
    """The dealer seeds of servers 0 and 1 for the job with this fingerprint."""
    key = hmac.new(secret, b"lpgan-job-seeds" + digest, hashlib.sha256).digest()
    return prg.derive_key(b"seed0", key), prg.derive_key(b"seed1", key)


async def drive_training(client: OwnerClient, cfg: TrainConfig, images: torch.Tensor, first: int = 0,
                         on_iteration: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Feed gan.jobs.train_program and collect what it gives back: the discriminator's mean
    outputs per iteration (to `on_iteration`), the samples and both trained models."""
    d_model, g_model = initial_models(cfg)
    if first == 0:
        share_module(client, d_model, "d")
        share_module(client, g_model, "g")
    inputs = iteration_inputs(cfg, images, first)

    def feed(count: int) -> None:
        for _ in range(count):
            item = next(inputs, None)
            if item is None:
                return
            i, real, noise = item
            client.share({real_key(i): real, noise_key(i): noise})

    feed(WINDOW)
    for i in range(first, cfg.iterations):
        d_real = float(await client.reveal(d_out_key("d_real", i))) / cfg.batch_size
        d_fake = float(await client.reveal(d_out_key("d_fake", i))) / cfg.batch_size
        feed(1)
        if on_iteration is not None:
            on_iteration(i, d_real, d_fake)
    client.share({"samples/noise": sample_noise(cfg)})
    samples = await client.reveal("samples")
    return {"samples": samples, "discriminator": await receive_module(client, d_model, "d"),
            "generator": await receive_module(client, g_model, "g")}


async def drive_synthesis(client: OwnerClient, generator: tnn.Module, noise: torch.Tensor, batch_size: int,
                          on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Feed gan.jobs.synthesize_program: the generator's weights and the noise in batches of
    `batch_size`; returns the images (only the owner ever sees them)."""
    share_module(client, generator, "g")
    chunks = noise.split(batch_size)
    for b, z in enumerate(chunks[:WINDOW]):
        client.share({f"samples/{b}/noise": z})
    images = []
    for b in range(len(chunks)):
        images.append(await client.reveal(f"samples/{b}"))
        if b + WINDOW < len(chunks):
            client.share({f"samples/{b + WINDOW}/noise": chunks[b + WINDOW]})
        if on_batch is not None:
            on_batch(b)
    return torch.cat(images)


def train_in_process(cfg: TrainConfig, images: torch.Tensor, state_dir: str | Path, *, first: int = 0,
                     seeds: tuple[bytes, bytes] | None = None, **options: Any) -> dict[str, Any]:
    """The training job with the owner and both servers in this process (mpcrt.run_with_owner):
    for tests and benchmarks. Adds 'curves' (d_real, d_fake per iteration) to the result;
    `options` go to run_with_owner (network, frac_bits, comparison, timeout...)."""
    from gan.jobs import train_program
    from mpcrt import run_with_owner

    curves: dict[str, list[float]] = {"d_real": [], "d_fake": []}

    def record(_: int, d_real: float, d_fake: float) -> None:
        curves["d_real"].append(d_real)
        curves["d_fake"].append(d_fake)

    async def owner(client: OwnerClient, _: dict) -> dict[str, Any]:
        return await drive_training(client, cfg, images, first, record)

    args = {"train": cfg.as_dict(), "resume_from": first, "state_dir": str(state_dir),
            "keep_checkpoints": checkpoints_to_keep(cfg)}
    result, _, _ = run_with_owner(train_program, owner, args, seeds=seeds, **options)
    return {**result, "curves": curves}
