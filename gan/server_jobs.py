"""The programs the edge servers run for the owner: secure training and secure synthesis.

Both run on each server as party 0 or 1 (SPMD), with every input from the owner (the
data, the noise, the initial model) and every output to it (mpcrt.owner_link): a server sees
only shares. Key names are the contract with gan.owner_jobs, the owner's side. Each phase runs
in a keyed scope (iteration i in key i + 1), so its message ids are the same whether the
run was interrupted or not (the dealer's seeds are fresh for every run: gan.owner_jobs), and
the iterations' dealer material streams ahead of them (mpcrt.stream). What the
owner sends is checked before it is used: the job id names a folder inside the state
directory, and checkpoints load as plain data only (gan.checkpoint).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gan
from gan import events, models
from gan.checkpoint import CheckpointStore
from gan.events import BatchDone, CheckpointSaved, IterationDone
from gan.jobfile import MAX_FRAC_BITS, MIN_FRAC_BITS
from gan.step import train_step
from gan.train import TrainConfig, optimizers
from mpcrt import OWNER, Party, keyed_scope
from mpcrt.server import JobValueError
from mpcrt.stream import MaterialStream

SETUP, SYNTHESIS = -1, -2  # keyed scopes outside the iterations (which use 1, 2, ...)
JOB_ID = re.compile(r"[0-9a-f]{64}")  # gan.owner_jobs.job_id: an HMAC-SHA256 in hex
MAX_KEPT_CHECKPOINTS = 1000
MAX_BATCHES = 1 << 20  # noise batches of one synthesis job


class JobArgsError(JobValueError):
    """The owner sent job arguments this server does not take; nothing was written (the
    server logs one line, no traceback)."""


def checkpoint_folder(state_dir: str | Path, job: object) -> Path:
    """Where the job's checkpoints live: STATE_DIR/first 16 digits of its id. The id comes from
    the owner, so only an id of gan.owner_jobs.job_id's form is taken, and the folder must resolve
    inside the state directory."""
    if not isinstance(job, str) or not JOB_ID.fullmatch(job):
        raise JobArgsError(f"the owner's job fingerprint {str(job)[:80]!r} is not 64 lowercase hex digits; refused "
                           "(is the owner's lpgan the same version as this server's?)")
    root = Path(state_dir).resolve()
    folder = (root / job[:16]).resolve()
    if folder.parent != root:
        raise JobArgsError(f"the job's checkpoint folder {folder} is not directly in the state directory {root}; "
                           "refused")
    return folder


def kept_checkpoints(value: object) -> int:
    """How many checkpoints to keep, as the owner asks (1..MAX_KEPT_CHECKPOINTS)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_KEPT_CHECKPOINTS:
        raise JobArgsError(f"keep_checkpoints must be an integer from 1 to {MAX_KEPT_CHECKPOINTS}, got {value!r}")
    return value


def check_scale(party: Party) -> None:
    """The job's fixed-point bits, within the range a GAN works in (gan.jobfile checks the
    same at the owner; an owner running other code meets it here, before anything runs)."""
    if not MIN_FRAC_BITS <= party.frac_bits <= MAX_FRAC_BITS:
        raise JobArgsError(f"frac_bits {party.frac_bits} is outside {MIN_FRAC_BITS}..{MAX_FRAC_BITS}, where GAN "
                           "training and synthesis work (docs/CONFIG.md); set [protocol] frac_bits")


def synthesis_args(args: dict[str, Any]) -> tuple[models.Preset, int]:
    """The preset and the number of noise batches of a synthesis job, as the owner asks."""
    preset, batches = args.get("preset"), args.get("batches")
    if not isinstance(preset, str) or preset not in models.PRESETS:
        raise JobArgsError(f"preset {str(preset)[:40]!r} is not one of {', '.join(models.PRESETS)}")
    if not isinstance(batches, int) or isinstance(batches, bool) or not 1 <= batches <= MAX_BATCHES:
        raise JobArgsError(f"batches must be an integer from 1 to {MAX_BATCHES}, got {str(batches)[:40]!r}")
    return models.PRESETS[preset], batches


def real_key(i: int) -> str:
    return f"real/{i}"


def noise_key(i: int) -> str:
    return f"noise/{i}"


def d_out_key(which: str, i: int) -> str:
    return f"{which}/{i}"


async def train_program(party: Party, args: dict[str, Any]) -> None:
    """args: 'train' (TrainConfig.for_servers: no seed), 'resume_from' (0 or a checkpointed
    iteration), 'fingerprint' (the job's id, gan.owner_jobs.job_id: its checkpoints live apart from
    other jobs' and are refused to them), 'keep_checkpoints', 'state_dir' (added by the
    server: where this job's checkpoints live). What the owner sends is checked before use."""
    check_scale(party)
    party.prefetched = True  # the iterations' material streams ahead (mpcrt.stream): methods weigh the online phase
    try:
        cfg = TrainConfig.from_dict(args["train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise JobArgsError(f"the owner's training configuration: {exc}") from None
    p = cfg.preset_()
    d_arch, g_arch = models.discriminator(p), models.generator(p)  # public architectures; weights from the owner
    job = args.get("fingerprint")
    store = CheckpointStore(checkpoint_folder(args["state_dir"], job), party.id,
                            keep=kept_checkpoints(args.get("keep_checkpoints", 2)), fingerprint=str(job))
    first = args.get("resume_from", 0)
    if not isinstance(first, int) or isinstance(first, bool) or not 0 <= first <= cfg.iterations:
        raise JobArgsError(f"resume_from must be an iteration from 0 to {cfg.iterations}, got {first!r}")
    if first:
        d, g = gan.placeholder(d_arch, party), gan.placeholder(g_arch, party)
        opt_d, opt_g = optimizers(cfg, d, g)
        store.load(first, party, {"d": d, "g": g}, {"d": opt_d, "g": opt_g})
    else:
        with keyed_scope(SETUP):
            d = await gan.secure(d_arch, party, src=OWNER, name="d")
            g = await gan.secure(g_arch, party, src=OWNER, name="g")
        opt_d, opt_g = optimizers(cfg, d, g)
    stream = MaterialStream(party, range(first + 1, cfg.iterations + 1))
    for i in range(first, cfg.iterations):
        with stream.iteration(i + 1):
            x = await party.owner.receive(real_key(i))
            z = await party.owner.receive(noise_key(i))
            out = await train_step(d, g, opt_d, opt_g, x, z)
        party.owner.send(d_out_key("d_real", i), out.d_real.sum())
        party.owner.send(d_out_key("d_fake", i), out.d_fake.sum())
        if cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0:
            store.save(i + 1, {"d": d, "g": g}, {"d": opt_d, "g": opt_g})
            events.send(party.owner, CheckpointSaved(i + 1))
        events.send(party.owner, IterationDone(i + 1, party.stats.rounds, party.stats.bytes_sent))
    with keyed_scope(SYNTHESIS):
        await _synthesize(party, g, "samples")
    await gan.reveal(d, d_arch, to=OWNER, name="d")
    await gan.reveal(g, g_arch, to=OWNER, name="g")


async def synthesize_program(party: Party, args: dict[str, Any]) -> None:
    """args: 'preset', 'batches' (how many noise batches the owner sends). The owner shares a
    trained generator and the noise; the images go back to the owner only."""
    check_scale(party)
    party.prefetched = True  # as in train_program
    preset, batches = synthesis_args(args)
    g_arch = models.generator(preset)
    with keyed_scope(SETUP):
        g = await gan.secure(g_arch, party, src=OWNER, name="g")
    stream = MaterialStream(party, range(1, batches))  # the last batch may be smaller: its plan is its own
    for b in range(batches):
        with stream.iteration(b + 1):
            await _synthesize(party, g, f"samples/{b}")
        events.send(party.owner, BatchDone(b + 1, party.stats.rounds, party.stats.bytes_sent))


async def _synthesize(party: Party, g: gan.nn.Module, key: str) -> None:
    """G on the owner's shared noise `{key}/noise` (batch-norm running statistics); images to the owner."""
    z = await party.owner.receive(f"{key}/noise")
    g.eval()
    images = await g.forward(z)
    g.train()
    party.owner.send(key, images)


PROGRAMS = {"train": train_program, "synthesize": synthesize_program}
