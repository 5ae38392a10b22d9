"""The data owner's side of the GAN jobs: what it shares, what it gets back, and its keys.

The drivers mirror gan.server_jobs key for key. Training inputs go out a few iterations ahead
of the servers (WINDOW), so the owner's round trip never stalls them, without holding a
long run's data in the servers' memory.

Every run, a resumed one included, gets fresh dealer seeds (run_seeds): no pad ever masks
two values, whatever changed between two runs of one job file (the program, torch, the
data). A checkpoint holds the servers' shares, never dealer material, so a resumed run
needs none of the old seeds: it continues from the checkpoint's values exactly. Two runs
of one job therefore show the servers unrelated shares, and their results differ only by
the masks' rounding: the dealer's truncation drops a borrow of one unit in the last place
that depends on the mask (mpcrt.ops.truncation), so they agree to about 1e-2 after a few
iterations, not bit for bit. Only a replay with the same seeds (tests) is bit-identical.

The owner's inputs (initial weights, batch order, noise) come from `inputs_key`: its secret
with the job's seed, so the servers, who get neither, cannot rebuild them, while the owner
can, for a resumed run and for the plaintext twin. The id the servers see (job_id) is keyed
by the same secret: they cannot test a guess of the data or of the configuration against it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import torch
from torch import nn as tnn

from gan.secure import receive_module, share_module
from gan.server_jobs import d_out_key, noise_key, real_key
from gan.train import TrainConfig, initial_models, iteration_inputs, public_inputs_key, sample_noise
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
    """A digest of a job's description (msgpack-able) and of the tensors it computes on.
    Unkeyed, so never sent: anyone could test a guess of the data against it (job_id is sent)."""
    h = hashlib.sha256(msgpack.packb(description, default=str))
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(msgpack.packb([str(t.dtype), list(t.shape)]))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def job_id(secret: bytes, description: dict[str, Any], *tensors: torch.Tensor) -> str:
    """The job's id for the servers (its checkpoints' folder and name): 64 hex digits, keyed
    by the owner's secret, the same for every run of one job (so --resume finds its checkpoints)."""
    return hmac.new(secret, b"lpgan-job-id" + fingerprint(description, *tensors), hashlib.sha256).hexdigest()


def inputs_key(secret: bytes, seed: int) -> bytes:
    """The key of the owner's inputs for a job with this seed (gan.train.input_stream)."""
    return hmac.new(secret, b"lpgan-inputs" + seed.to_bytes(8, "little", signed=True), hashlib.sha256).digest()


def run_seeds() -> tuple[bytes, bytes]:
    """Fresh dealer seeds of servers 0 and 1, for one run (never derived: see the module's notes)."""
    return prg.new_key(), prg.new_key()


def training_args(cfg: TrainConfig, job: str, first: int) -> dict[str, Any]:
    """What the servers get for a training run: only what they compute with (no seed)."""
    return {"train": cfg.for_servers(), "resume_from": first, "fingerprint": job,
            "keep_checkpoints": checkpoints_to_keep(cfg)}


async def drive_training(client: OwnerClient, cfg: TrainConfig, images: torch.Tensor, first: int = 0,
                         on_iteration: Callable[[int, float, float], None] | None = None, *,
                         key: bytes) -> dict[str, Any]:
    """Feed gan.server_jobs.train_program the inputs drawn from `key` and collect what it gives back:
    the discriminator's mean outputs per iteration (to `on_iteration`), the samples and both
    trained models."""
    d_model, g_model = initial_models(cfg, key)
    if first == 0:
        share_module(client, d_model, "d")
        share_module(client, g_model, "g")
    inputs = iteration_inputs(cfg, images, first, key)

    def feed(count: int) -> None:
        for _ in range(count):
            item = next(inputs, None)
            if item is None:
                return
            i, real, noise = item
            client.share({real_key(i): real, noise_key(i): noise})

    feed(WINDOW)
    for i in range(first, cfg.iterations):
        d_real = float(await client.reveal(d_out_key("d_real", i), shape=())) / cfg.batch_size
        d_fake = float(await client.reveal(d_out_key("d_fake", i), shape=())) / cfg.batch_size
        feed(1)
        if on_iteration is not None:
            on_iteration(i, d_real, d_fake)
    client.share({"samples/noise": sample_noise(cfg, key)})
    p = cfg.preset_()
    samples = await client.reveal("samples", shape=(cfg.samples, p.channels, p.image_size, p.image_size))
    return {"samples": samples, "discriminator": await receive_module(client, d_model, "d"),
            "generator": await receive_module(client, g_model, "g")}


async def drive_synthesis(client: OwnerClient, generator: tnn.Module, noise: torch.Tensor, batch_size: int,
                          on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Feed gan.server_jobs.synthesize_program: the generator's weights and the noise in batches of
    `batch_size`; returns the images (only the owner ever sees them)."""
    share_module(client, generator, "g")
    with torch.no_grad():  # what one image looks like, from a copy (its running statistics stay)
        image = tuple(copy.deepcopy(generator).eval()(noise[:1]).shape[1:])
    chunks = noise.split(batch_size)
    for b, z in enumerate(chunks[:WINDOW]):
        client.share({f"samples/{b}/noise": z})
    images = []
    for b in range(len(chunks)):
        images.append(await client.reveal(f"samples/{b}", shape=(len(chunks[b]), *image)))
        if b + WINDOW < len(chunks):
            client.share({f"samples/{b + WINDOW}/noise": chunks[b + WINDOW]})
        if on_batch is not None:
            on_batch(b)
    return torch.cat(images)


def train_in_process(cfg: TrainConfig, images: torch.Tensor, state_dir: str | Path, *, first: int = 0,
                     seeds: tuple[bytes, bytes] | None = None, key: bytes | None = None, job: str | None = None,
                     **options: Any) -> dict[str, Any]:
    """The training job with the owner and both servers in this process (mpcrt.run_with_owner):
    for tests and benchmarks. Adds 'curves' (d_real, d_fake per iteration) to the result.
    seeds: the dealer's (default fresh; fixed ones replay a run); key: the inputs key (default
    the public one of cfg.seed, as plaintext_training's); job: the id the servers file its
    checkpoints under (default one per key and images, whatever the configuration, so that a
    shorter run stands for an interrupted one); `options` go to run_with_owner (network,
    frac_bits, comparison, timeout...)."""
    from gan.server_jobs import train_program
    from mpcrt import run_with_owner

    curves: dict[str, list[float]] = {"d_real": [], "d_fake": []}

    def record(_: int, d_real: float, d_fake: float) -> None:
        curves["d_real"].append(d_real)
        curves["d_fake"].append(d_fake)

    key = public_inputs_key(cfg.seed) if key is None else key

    async def owner(client: OwnerClient, _: dict) -> dict[str, Any]:
        return await drive_training(client, cfg, images, first, record, key=key)

    job = job or job_id(key, {"program": "train"}, images)
    args = {**training_args(cfg, job, first), "state_dir": str(state_dir)}
    result, _, _ = run_with_owner(train_program, owner, args, seeds=seeds, **options)
    return {**result, "curves": curves}
