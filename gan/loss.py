"""Gradients of the GAN losses at the discriminator's logits (labels are public).

Binary cross-entropy of sigmoid(x) against label y, averaged over the batch, has the
gradient (sigmoid(x) - y) / N at the logit x: local on shares, given D's output. The
generator's non-saturating loss is the same with y = 1 on fake images.
"""

from __future__ import annotations

from gan.nn import functional as F
from gan.nn.module import Tensor
from mpcrt import ArithmeticShare


async def bce_logit_grad(probability: Tensor, label: float) -> Tensor:
    """d mean(BCE(p, label)) / d logit, for p = sigmoid(logit) of shape (N, 1). On shares,
    for N a power of two, p - label read at log2 N more fractional bits (exact, no round:
    the first product of the backward truncates them, gan.nn.ProductLayer)."""
    n = probability.shape[0]
    difference = probability - label
    if isinstance(difference, ArithmeticShare) and n & (n - 1) == 0:
        return difference.divided_exactly(n.bit_length() - 1)
    return await F.scale(difference, 1.0 / n)
