"""SGD with momentum and Adam on shared (or plain) parameters; all updates run concurrently.

Adam: the moments live on shares; the step uses the secure inverse square root,
1/(sqrt(v_hat) + eps) taken as 1/sqrt(v_hat + eps^2). Fixed point cannot hold the squares
of small gradients (a gradient of 1e-3 squares to 0.07 units of 2^-16), and the step
m_hat / sqrt(v_hat) does not change when the gradient is multiplied by a constant, so
gradients enter Adam multiplied by `grad_scale` (a power of two: an exact local shift).
The moments keep 16 more fractional bits than the parameters: (1 - beta2) g^2 would round
to zero, and the bias correction multiplies early second moments by up to 1 / (1 - beta2).
At 32 fractional bits a moment times a 16-bit factor leaves the ring from 2^13 (with the
default 2^8, |g| > 0.35), so the second moment's factors take 8 bits (`V_FACTOR_BITS`,
0.4% relative) and its decay is v - v (1 - beta2), a small factor: it stays in the ring
for |g| < 5.6. The square root's range [2^-14, 2^21) (`ADAM_RANGE`) covers |g| in about
[3e-5, 5.6]; below it a step is smaller than torch's, above it larger, never wrong in sign.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine, Iterable
from typing import Any

from gan.nn import functional as F
from gan.nn.module import Parameter, Tensor
from mpcrt import ArithmeticShare

MOMENT_EXTRA_BITS = 16
V_FACTOR_BITS = 8  # fractional bits of the second moment's public factors: room in the ring for v
ADAM_RANGE = (-14, 20)  # inv_sqrt's powers of two for v_hat: [2^-14, 2^21)
BOUND = 2.0 ** 20  # |parameter|, |gradient| below it: SGD's products with public reals take one round


class Optimizer:
    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters")

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    async def step(self) -> None:
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:
            raise RuntimeError(f"parameters {missing} have no gradient: run backward before step")
        await asyncio.gather(*(self._update(i, p) for i, p in enumerate(self.params)))

    async def _update(self, index: int, p: Parameter) -> None:
        raise TypeError(f"{type(self).__name__} does not define an update")

    def state(self) -> dict:
        """What a checkpoint needs to continue (buffers per parameter index, counters)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Inverse of state()."""


class SGD(Optimizer):
    """torch.optim.SGD semantics (no dampening, no Nesterov)."""

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._buffers: dict[int, Tensor] = {}

    def state(self) -> dict:
        return {"momentum_buffers": dict(self._buffers)}

    def load_state(self, state: dict) -> None:
        self._buffers = dict(state["momentum_buffers"])

    async def _update(self, index: int, p: Parameter) -> None:
        g = p.grad
        if self.weight_decay:
            g = g + await F.scale(p.data, self.weight_decay, bound=BOUND)
        if self.momentum:
            buf = self._buffers.get(index)
            g = g if buf is None else await F.scale(buf, self.momentum, bound=BOUND) + g
            self._buffers[index] = g
        p.data = p.data - await F.scale(g, self.lr, bound=BOUND)


class Adam(Optimizer):
    """torch.optim.Adam semantics, with the fixed-point adjustments in the module docstring.

    All parameters are updated as one flat buffer: each protocol runs once per step for the
    whole model (one inverse square root over every element, not one per tensor), so a
    step pays Python's per-op cost once and its comparisons take the method that is
    cheapest for the model's size."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, grad_scale_bits: int = 8) -> None:
        super().__init__(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.grad_scale_bits = grad_scale_bits
        self._m: Tensor | None = None  # the moments of all parameters, flat (F.flat_cat)
        self._v: Tensor | None = None
        self._t = 0

    def _shapes(self) -> list:
        return [p.data.shape for p in self.params]

    def state(self) -> dict:
        """Moments per parameter index (the layout checkpoints keep), and the step count."""
        if self._m is None:
            return {"m": {}, "v": {}, "t": self._t}
        m, v = F.split_flat(self._m, self._shapes()), F.split_flat(self._v, self._shapes())
        return {"m": dict(enumerate(m)), "v": dict(enumerate(v)), "t": self._t}

    def load_state(self, state: dict) -> None:
        self._t = state["t"]
        if not state["m"]:
            self._m = self._v = None
            return
        pieces = {}
        for name in ("m", "v"):
            pieces[name] = [state[name][i] for i in range(len(self.params))]
            for i, (piece, shape) in enumerate(zip(pieces[name], self._shapes(), strict=True)):
                if piece.shape != shape:
                    raise ValueError(f"Adam state {name}[{i}] has shape {tuple(piece.shape)}, "
                                     f"its parameter {tuple(shape)}")
        self._m, self._v = F.flat_cat(pieces["m"]), F.flat_cat(pieces["v"])

    async def step(self) -> None:
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:
            raise RuntimeError(f"parameters {missing} have no gradient: run backward before step")
        self._t += 1
        b1, b2 = self.betas
        parts = [p.grad for p in self.params]
        f = getattr(parts[0], "frac_bits", 0)
        fine = f + MOMENT_EXTRA_BITS  # moments keep more bits: 0.001 g^2 must not round to 0
        summands = [p.gradient_parts() for p in self.params]  # each gradient as the passes made it
        if self.weight_decay:  # one scaling of the flat buffer (the sum is no truncation's output)
            parts = [F.flat_cat(parts) + await F.scale(F.flat_cat([p.data for p in self.params]), self.weight_decay)]
            summands = [parts]
        grad_scale = 1 << self.grad_scale_bits  # exact, and Adam's step does not see the scale
        parts = [g * grad_scale for g in parts]
        summands = [[g * grad_scale for g in terms] for terms in summands]
        g, m_old = F.flat_cat(parts), self._m
        # the step m_hat lr / sqrt(v_hat + eps^2): m_hat lr in one truncation from the old m
        # and g, beside the rest (a truncation's output: the inverse square root takes it as
        # its factor, so the step needs no product of its own)
        scaled = self._scaled_first_moment(m_old, g, f)
        v_decay = self._decayed(self._v, 1 - b2, V_FACTOR_BITS)  # v b2 = v - v (1 - b2): the small factor fits
        if all(getattr(term, "opening", None) is not None for terms in summands for term in terms):
            # every gradient a sum of truncations' outputs (backward passes'): its square is local
            g2 = F.flat_cat([await _square_of_sum(terms) for terms in summands])
            m_scaled, m_decayed, m_new, (v_hat, v_term), v_decayed = await asyncio.gather(
                scaled, self._decayed(m_old, b1), F.scale(g, 1 - b1, fine), self._second_moment(g2, f), v_decay)
        else:  # g opened once (masked) for its square, the first moment's rounds beside it
            opened, m_scaled = await asyncio.gather(F.open_masked(g), scaled)
            g2 = await F.square_fine(opened)  # local, at 2f bits
            # one gather: the scalings' messages leave in the same frames
            m_decayed, m_new, (v_hat, v_term), v_decayed = await asyncio.gather(
                self._decayed(m_old, b1), F.scale(g, 1 - b1, fine), self._second_moment(g2, f), v_decay)
        self._m = m_new if m_decayed is None else m_decayed + m_new
        eps = self.eps * (1 << self.grad_scale_bits)
        step, v_new = await asyncio.gather(F.inv_sqrt(v_hat + eps * eps, refine=False, exponents=ADAM_RANGE,
                                                      times=m_scaled, frac_bits=f or None), v_term)
        self._v = v_new if v_decayed is None else self._v - v_decayed + v_new
        for p, delta in zip(self.params, F.split_flat(step, self._shapes()), strict=True):
            p.data = p.data - delta

    @staticmethod
    async def _decayed(moment: Tensor | None, factor: float, scale_bits: int | None = None) -> Tensor | None:
        """moment * factor (None for no moment yet)."""
        return None if moment is None else await F.scale(moment, factor, scale_bits=scale_bits)

    async def _scaled_first_moment(self, m_old: Tensor | None, g: Tensor, f: int) -> Tensor:
        """c (b1 m_old + (1 - b1) g), c = lr / (1 - b1^t): the new first moment times lr and
        its bias correction, at f + 8 bits in one truncation of a local combination. Its
        factors drift with t; they are encoded at a fixed number of fractional bits, 12 more
        than the smaller factor's exponent (so at least 12 significant bits each), so every
        step truncates alike (one plan: mpcrt.stream) and the sum stays in the ring while
        |m| < 2^18 min(b1, 1 - b1) (the nonzero ones)."""
        b1, _ = self.betas
        c = self.lr / (1 - b1 ** self._t)
        if not isinstance(g, ArithmeticShare):
            return c * ((1 - b1) * g if m_old is None else b1 * m_old + (1 - b1) * g)
        fine = f + MOMENT_EXTRA_BITS
        bits = 12 - math.floor(math.log2(self.lr * min(w for w in (b1, 1 - b1) if w > 0)))
        raw = g.lift(fine - f).times(c * (1 - b1), bits)
        if m_old is not None and b1:
            raw = raw + m_old.times(c * b1, bits)
        return await F.rescale(raw, f + 8)

    async def _second_moment(self, g2: Tensor, f: int) -> tuple[Tensor, Coroutine[Any, Any, Tensor]]:
        """v_hat, the bias-corrected second moment at f + 8 bits, and the coroutine that makes
        v's new term (1 - b2) g^2 at f + 16 (v itself is the next step's: awaited beside the
        inverse square root, it joins its first round). On shares g^2 / 2^e first, (1 - b2)
        2^e in [1, 2) (one truncation), then v_hat = c b2 v_old + c (1 - b2) g^2, c = 1 /
        (1 - b2^t), in one truncation of a local combination (its factors at a fixed scale,
        so every step truncates alike: one plan): 2 rounds, where v and then v_hat took 3.
        Both factors at 8 bits (0.4% relative): the inverse square root that takes v_hat
        is within 4e-3 relative (a step's size, not its sign). The ring holds v_hat at 40
        bits (v_hat < 2^22: ADAM_RANGE), so it holds each term, whatever the factors."""
        _, b2 = self.betas
        fine, factor = f + MOMENT_EXTRA_BITS, 1 / (1 - b2 ** self._t)
        if not isinstance(g2, ArithmeticShare):
            v = (1 - b2) * g2 if self._v is None else b2 * self._v + (1 - b2) * g2
            return v * factor, F.scale(g2, 1 - b2)
        e = -math.floor(math.log2(1 - b2))
        small = await F.rescale(g2.divided_exactly(e), fine)  # g^2 / 2^e
        corrected = small.times(factor * (1 - b2) * 2 ** e, V_FACTOR_BITS)
        if self._v is not None:
            corrected = corrected + self._v.times(factor * b2, V_FACTOR_BITS)
        return await F.rescale(corrected, f + 8), F.rescale(small.times((1 - b2) * 2 ** e, V_FACTOR_BITS), fine)


async def _square_of_sum(terms: list[Tensor]) -> Tensor:
    """(sum of terms)^2 at twice their scale: sum_i t_i^2 + 2 sum_(i<j) t_i t_j, products of
    masked shares (local) where each term is a truncation's output: a gradient that two
    passes summed (the discriminator's, real and fake) needs no opening for its square.
    Concurrent passes add their terms in whichever order their rounds end, which may differ
    between the parties and between iterations: the terms are taken in the order of the
    steps that made their masks, so both parties ask the dealer for the same products."""
    if len(terms) > 1:
        terms = sorted(terms, key=lambda term: term.opening.source.request.mid)
    total = None
    for i, a in enumerate(terms):
        for j, b in enumerate(terms[i:], start=i):
            product = await F.mul(a, b, frac_bits=2 * a.frac_bits)
            product = product if i == j else product * 2
            total = product if total is None else total + product
    return total
