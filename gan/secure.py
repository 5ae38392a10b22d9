"""Turn a plain torch model into its secret-shared twin, and reveal a twin back into torch.

Architectures are public: every party passes a module of the same architecture, and the
weights of party `src` are the ones shared (the other party's values are ignored). With
src="owner" the weights come from the data owner (mpcrt.owner_link), which shares them with
`share_module`; `reveal(..., to="owner")` sends them back, and the owner reads them with
`receive_module`. Owner keys are "{name}/{state_dict key}".
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import torch
from torch import nn as tnn

from gan import nn
from mpcrt import OWNER, ArithmeticShare, OwnerClient, Party

_STATE = ("weight", "bias", "running_mean", "running_var")


async def secure(module: tnn.Module, party: Party, src: int | str = 0, name: str = "model") -> nn.Module:
    """The shared twin of `module` (Sequential of supported layers), weights from party `src`
    (0, 1, or "owner": then `name` prefixes the owner's keys)."""
    return await _secure(module, party, src, f"{name}/")


async def _secure(module: tnn.Module, party: Party, src: int | str, prefix: str) -> nn.Module:
    if isinstance(module, tnn.Sequential):
        return nn.Sequential(*[await _secure(layer, party, src, f"{prefix}{i}.") for i, layer in enumerate(module)])
    values = await _share_all(module, party, src, prefix)
    return _twin(module, values)


async def _share_all(module: tnn.Module, party: Party, src: int | str, prefix: str
                     ) -> dict[str, ArithmeticShare | None]:
    names = [n for n in _STATE if getattr(module, n, None) is not None]
    if src == OWNER:
        shared = [await party.owner.receive(prefix + n) for n in names]
    else:
        shared = await asyncio.gather(*(party.input(getattr(module, n).detach() if party.id == src else None,
                                                    src=src) for n in names))  # type: ignore[arg-type]
    return dict(zip(names, shared, strict=True))


def plaintext(module: tnn.Module) -> nn.Module:
    """The twin of `module` on plain float64 tensors: the same layer code as on shares, for
    the plaintext run a secure one is compared with (no party, no communication)."""
    if isinstance(module, tnn.Sequential):
        return nn.Sequential(*[plaintext(layer) for layer in module])
    return _twin(module, {n: getattr(module, n).detach().clone().double()
                          for n in _STATE if getattr(module, n, None) is not None})


def placeholder(module: tnn.Module, party: Party) -> nn.Module:
    """A twin of `module` holding zero shares, without communication: to load a checkpoint into."""
    if isinstance(module, tnn.Sequential):
        return nn.Sequential(*[placeholder(layer, party) for layer in module])
    values = {n: ArithmeticShare(party, torch.zeros(getattr(module, n).shape, dtype=torch.int64), party.frac_bits,
                                 torch.float32)
              for n in _STATE if getattr(module, n, None) is not None}
    return _twin(module, values)


def _owned_state(module: tnn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if k.rsplit(".", 1)[-1] in _STATE}


def share_module(client: OwnerClient, module: tnn.Module, name: str = "model") -> None:
    """The owner's side of secure(..., src="owner", name=name): share the module's weights."""
    client.share({f"{name}/{k}": v.detach() for k, v in _owned_state(module).items()})


async def receive_module(client: OwnerClient, like: tnn.Module, name: str = "model") -> tnn.Module:
    """The owner's side of reveal(..., to="owner", name=name): a copy of `like` with the
    revealed weights and running statistics."""
    out = copy.deepcopy(like)
    keys = list(_owned_state(out))
    state = out.state_dict()
    values = await asyncio.gather(*(client.reveal(f"{name}/{k}", shape=tuple(state[k].shape)) for k in keys))
    with torch.no_grad():
        for k, v in zip(keys, values, strict=True):
            state[k].copy_(v)
    return out


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
    from gan.models import Square

    simple = {tnn.ReLU: nn.ReLU, tnn.Sigmoid: nn.Sigmoid, tnn.Tanh: nn.Tanh, tnn.Flatten: nn.Flatten, Square: nn.Square}
    if type(module) in simple:
        return simple[type(module)]()
    if isinstance(module, tnn.LeakyReLU):
        return nn.LeakyReLU(module.negative_slope)
    raise TypeError(f"no secure twin for {type(module).__name__}; supported: Conv2d, ConvTranspose2d, Linear, "
                    "BatchNorm2d, ReLU, LeakyReLU, Sigmoid, Tanh, Square (gan.models), Flatten, Sequential")


def _check(ok: bool, message: str, module: tnn.Module) -> None:
    if not ok:
        raise TypeError(f"{message}: {module}")


async def reveal(twin: nn.Module, like: tnn.Module, to: int | str | None = None, name: str = "model"
                 ) -> tnn.Module | None:
    """A copy of `like` holding the twin's (revealed) weights and running statistics; with
    `to`, only that party learns them (the other gets None); to="owner" sends each party's
    shares to the owner under `name` (receive_module there) and returns None."""
    if to == OWNER:
        _send_to_owner(twin, f"{name}/")
        return None
    out = copy.deepcopy(like)
    learned = await _reveal_into(twin, out, to)  # type: ignore[arg-type]
    return out if to is None or learned else None


def _send_to_owner(twin: nn.Module, prefix: str) -> None:
    if isinstance(twin, nn.Sequential):
        for i, layer in enumerate(twin.layers):
            _send_to_owner(layer, f"{prefix}{i}.")
        return
    for n, p in twin.named_parameters():
        p.data.party.owner.send(prefix + n, p.data)
    for n in ("running_mean", "running_var"):
        if hasattr(twin, n):
            value = getattr(twin, n)
            value.party.owner.send(prefix + n, value)


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
