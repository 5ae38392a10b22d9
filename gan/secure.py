"""Turn a plain torch model into its secret-shared twin, and reveal a twin back into torch.

Architectures are public: every party passes a module of the same architecture, and the
weights of party `src` are the ones shared (the other party's values are ignored).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import torch
from torch import nn as tnn

from gan import nn
from mpcrt import ArithmeticShare, Party


async def secure(module: tnn.Module, party: Party, src: int = 0) -> nn.Module:
    """The shared twin of `module` (Sequential of supported layers), weights from party `src`."""
    if isinstance(module, tnn.Sequential):
        return nn.Sequential(*[await secure(layer, party, src) for layer in module])
    values = await _share_all(module, party, src)
    return _twin(module, values)


async def _share_all(module: tnn.Module, party: Party, src: int) -> dict[str, ArithmeticShare | None]:
    names = [n for n in ("weight", "bias", "running_mean", "running_var") if getattr(module, n, None) is not None]
    shared = await asyncio.gather(*(party.input(getattr(module, n).detach() if party.id == src else None, src=src)
                                    for n in names))
    return dict(zip(names, shared, strict=True))


def _twin(module: tnn.Module, v: dict[str, Any]) -> nn.Module:
    if isinstance(module, tnn.Conv2d):
        _check(module.groups == 1, "grouped convolutions are not supported", module)
        return nn.Conv2d(v["weight"], v.get("bias"), module.stride, module.padding, module.dilation)
    if isinstance(module, tnn.ConvTranspose2d):
        _check(module.groups == 1, "grouped convolutions are not supported", module)
        return nn.ConvTranspose2d(v["weight"], v.get("bias"), module.stride, module.padding, module.output_padding,
                                  module.dilation)
    if isinstance(module, tnn.Linear):
        return nn.Linear(v["weight"], v.get("bias"))
    if isinstance(module, tnn.BatchNorm2d):
        _check(module.affine and module.track_running_stats, "batch norm needs affine=True and running stats",
               module)
        return nn.BatchNorm2d(v["weight"], v["bias"], v["running_mean"], v["running_var"], module.momentum,
                              module.eps)
    simple = {tnn.ReLU: nn.ReLU, tnn.Sigmoid: nn.Sigmoid, tnn.Tanh: nn.Tanh, tnn.Flatten: nn.Flatten}
    if type(module) in simple:
        return simple[type(module)]()
    if isinstance(module, tnn.LeakyReLU):
        return nn.LeakyReLU(module.negative_slope)
    raise TypeError(f"no secure twin for {type(module).__name__}; supported: Conv2d, ConvTranspose2d, Linear, "
                    "BatchNorm2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Sequential")


def _check(ok: bool, message: str, module: tnn.Module) -> None:
    if not ok:
        raise TypeError(f"{message}: {module}")


async def reveal(twin: nn.Module, like: tnn.Module, to: int | None = None) -> tnn.Module | None:
    """A copy of `like` holding the twin's (revealed) weights and running statistics; with
    `to`, only that party learns them (the other gets None)."""
    out = copy.deepcopy(like)
    learned = await _reveal_into(twin, out, to)
    return out if to is None or learned else None


async def _reveal_into(twin: nn.Module, module: tnn.Module, to: int | None) -> bool:
    """Copy the opened values into `module`; True if this party learned them."""
    if isinstance(twin, nn.Sequential):
        learned = [await _reveal_into(t, m, to) for t, m in zip(twin.layers, module, strict=True)]
        return any(learned)
    pairs: list[tuple[str, Any]] = [(n, p.data) for n, p in twin.named_parameters()]
    for name in ("running_mean", "running_var"):
        if hasattr(twin, name):
            pairs.append((name, getattr(twin, name)))
    opened = await asyncio.gather(*(value.reveal(to=to) for _, value in pairs))
    with torch.no_grad():
        for (name, _), value in zip(pairs, opened, strict=True):
            if value is not None:
                getattr(module, name).copy_(value)
    return any(value is not None for value in opened)
