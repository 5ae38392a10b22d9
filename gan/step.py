"""One GAN training iteration on shares (or, with plain tensors, its plaintext twin).

D step: G(z), then D on the real and on the fake batch concurrently (two passes that share
D's parameters and share rounds), gradients of the cross-entropy at D's logits, both
backward passes concurrently (gradients add up), D's optimizer. G step: D on the same
fake batch with the updated D, the non-saturating loss (label 1), backward through D to
the images (D's parameters take no gradient there) and on through G, G's optimizer. No
backward makes its network's input gradient (the images', the noise's). What G's backward
needs of its forward alone is made beside D's first forward (Module.prepare_backward).
As in torch's DCGAN example, except that the two concurrent D passes each update the
batch-norm running statistics from the same old value (the fake pass's, last in program
order, stays), where torch's sequential passes apply both updates. The plaintext twin
does the same.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gan.loss import bce_logit_grad
from gan.nn.module import Sequential, Tensor
from gan.optim import Optimizer


@dataclass
class StepOutputs:
    """D's outputs of the iteration (shares): on real, on fake (D step) and on fake (G step)."""

    d_real: Tensor
    d_fake: Tensor
    d_fake_after: Tensor


async def train_step(d: Sequential, g: Sequential, opt_d: Optimizer, opt_g: Optimizer, real: Tensor,
                     noise: Tensor) -> StepOutputs:
    fake = await g.forward(noise)
    # the running statistics are not updated in place by concurrent passes: the fake pass,
    # last in program order, updates its own copy from the old values and D adopts it (the
    # real pass's update would be dropped: it makes none)
    on_real, on_fake = d.copy(statistics="none"), d.copy(statistics="own")
    # what G's backward needs of its forward alone (its output activation's derivative) is
    # made in the rounds of D's forward, not in G's backward
    g_ahead = g.prepare_backward()
    p_real, p_fake, *_ = await asyncio.gather(on_real.forward(real), on_fake.forward(fake),
                                              *([] if g_ahead is None else [g_ahead]))
    d.adopt_statistics(on_fake)
    grad_real, grad_fake = await asyncio.gather(bce_logit_grad(p_real, 1.0), bce_logit_grad(p_fake, 0.0))
    d.zero_grad()
    # D's input gradients are not wanted: its first layer makes none
    await asyncio.gather(on_real.backward_from_logits(grad_real, input_grad=False),
                         on_fake.backward_from_logits(grad_fake, input_grad=False))
    await opt_d.step()

    judged = d.copy()
    p_after = await judged.forward(fake)
    d.requires_grad_(False)  # the G step needs D's input gradient only: no parameter gradients made
    try:
        grad_images = await judged.backward_from_logits(await bce_logit_grad(p_after, 1.0))
    finally:
        d.requires_grad_(True)
    d.zero_grad()
    g.zero_grad()
    await g.backward(grad_images, input_grad=False)  # nobody wants the noise's gradient
    await opt_g.step()
    return StepOutputs(p_real, p_fake, p_after)
