"""The programs the edge servers run for the owner: secure training and secure synthesis.

Both run on each server as party 0 or 1 (SPMD), with every input from the owner (the
data, the noise, the initial model) and every output to it (mpcrt.owner): a server sees
only shares. Key names are the contract with gan.owner, the owner's side. Each phase runs
in a keyed scope (iteration i in key i + 1), so its message ids, and with them the dealer
material, are the same whether the run was interrupted or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gan
from gan import models
from gan.checkpoint import CheckpointStore
from gan.step import train_step
from gan.train import TrainConfig, optimizers
from mpcrt import OWNER, Party, keyed_scope

SETUP, SYNTHESIS = -1, -2  # keyed scopes outside the iterations (which use 1, 2, ...)


def real_key(i: int) -> str:
    return f"real/{i}"


def noise_key(i: int) -> str:
    return f"noise/{i}"


def d_out_key(which: str, i: int) -> str:
    return f"{which}/{i}"


async def train_program(party: Party, args: dict[str, Any]) -> None:
    """args: 'train' (TrainConfig as a dict), 'resume_from' (0 or a checkpointed iteration),
    'fingerprint' (of the job: its checkpoints live apart from other jobs' and are refused to
    them, so that no dealer material ever meets another job's values), 'keep_checkpoints',
    'state_dir' (added by the server: where this job's checkpoints live)."""
    cfg = TrainConfig.from_dict(args["train"])
    p = cfg.preset_()
    d_arch, g_arch = models.discriminator(p), models.generator(p)  # public architectures; weights from the owner
    fingerprint = str(args.get("fingerprint", ""))
    folder = Path(args["state_dir"]) / fingerprint[:16] if fingerprint else Path(args["state_dir"])
    store = CheckpointStore(folder, party.id, keep=int(args.get("keep_checkpoints", 2)), fingerprint=fingerprint)
    first = int(args.get("resume_from", 0))
    if first:
        d, g = gan.placeholder(d_arch, party), gan.placeholder(g_arch, party)
        opt_d, opt_g = optimizers(cfg, d, g)
        store.load(first, party, {"d": d, "g": g}, {"d": opt_d, "g": opt_g})
    else:
        with keyed_scope(SETUP):
            d = await gan.secure(d_arch, party, src=OWNER, name="d")
            g = await gan.secure(g_arch, party, src=OWNER, name="g")
        opt_d, opt_g = optimizers(cfg, d, g)
    for i in range(first, cfg.iterations):
        with keyed_scope(i + 1):
            x = await party.owner.receive(real_key(i))
            z = await party.owner.receive(noise_key(i))
            out = await train_step(d, g, opt_d, opt_g, x, z)
        party.owner.send(d_out_key("d_real", i), out.d_real.sum())
        party.owner.send(d_out_key("d_fake", i), out.d_fake.sum())
        if cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0:
            store.save(i + 1, {"d": d, "g": g}, {"d": opt_d, "g": opt_g})
            party.owner.event(checkpoint=i + 1)
        s = party.stats
        party.owner.event(iteration=i + 1, rounds=s.rounds, bytes_sent=s.bytes_sent)
    with keyed_scope(SYNTHESIS):
        await _synthesize(party, g, "samples")
    await gan.reveal(d, d_arch, to=OWNER, name="d")
    await gan.reveal(g, g_arch, to=OWNER, name="g")


async def synthesize_program(party: Party, args: dict[str, Any]) -> None:
    """args: 'preset', 'batches' (how many noise batches the owner sends). The owner shares a
    trained generator and the noise; the images go back to the owner only."""
    g_arch = models.generator(models.PRESETS[args["preset"]])
    with keyed_scope(SETUP):
        g = await gan.secure(g_arch, party, src=OWNER, name="g")
    for b in range(int(args["batches"])):
        with keyed_scope(b + 1):
            await _synthesize(party, g, f"samples/{b}")
        party.owner.event(batch=b + 1, rounds=party.stats.rounds, bytes_sent=party.stats.bytes_sent)


async def _synthesize(party: Party, g: gan.nn.Module, key: str) -> None:
    """G on the owner's shared noise `{key}/noise` (batch-norm running statistics); images to the owner."""
    z = await party.owner.receive(f"{key}/noise")
    g.eval()
    images = await g.forward(z)
    g.train()
    party.owner.send(key, images)


PROGRAMS = {"train": train_program, "synthesize": synthesize_program}
