"""Correlated randomness, derived deterministically from two seeds.

The dealer holds seed0 (shared with party 0) and seed1 (shared with party 1). Every piece
of material is named by a `Request` (the step's message id and a typed spec of its kind,
mpcrt.dealer.kinds), and its random components are ranges of one AES-CTR stream per seed,
named by the whole request (`Request.stream_name`: every parameter included). Both
parties derive their free parts (masks) locally; one of them, the request's
`corrected_party`, receives corrections for the dependent parts (c = a*b - c_other, ...),
and the other derives its shares of those from its seed too. The corrected party is half
the requests' each (by the request's digest: MP-SPDZ's rotating "king"), so each
owner-to-server link carries about half the material. A request that differs from the
program's in any parameter names other streams: its answer is independent of the real one.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from mpcrt import prg
from mpcrt.dealer import kinds  # defines every kind (KINDS)
from mpcrt.dealer.request import KINDS, Request, Spec

__all__ = ["KINDS", "MaterialMaker", "Request", "answer", "answer_bytes", "answer_names", "answer_specs",
           "corrected_party", "derive", "derive_parts", "seeded", "seeded_parts", "wire_dtype"]


def is_xor(request: Request, component: str) -> bool:
    return component in request.spec.xor


WIRE_DTYPES = ((8, torch.int8), (16, torch.int16), (32, torch.int32), (64, torch.int64))


def wire_dtype(request: Request, component: str) -> torch.dtype:
    """The narrowest integer type holding the bits of a component's shares that matter
    (Spec.widths): what party 0 derives and party 1 receives."""
    return _dtype_of_width(request.spec.widths().get(component, 64))


@functools.cache
def _dtype_of_width(width: int) -> torch.dtype:
    return next(dtype for bits, dtype in WIRE_DTYPES if width <= bits)


@dataclass(frozen=True)
class _Slot:
    """Where a component lies in its request's stream: from byte `offset` (a block boundary)."""

    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@functools.lru_cache(maxsize=1 << 14)
def _layout(spec: Spec) -> dict[str, _Slot]:
    """The components a party may derive (free and dependent, in the spec's order; empty ones
    take no bytes), each from a block boundary of the request's one stream per seed. A
    function of the spec alone: the requests of a streamed plan's iterations share it."""
    slots, offset = {}, 0
    widths = spec.widths()
    for name, shape in spec.shapes().items():
        if name in spec.public or not math.prod(shape):
            continue
        slots[name] = _Slot(offset, tuple(shape), _dtype_of_width(widths.get(name, 64)))
        offset += -(-slots[name].nbytes // prg.BLOCK) * prg.BLOCK
    return slots


def seeded_parts(request: Request, seed: bytes, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """A party's seeded shares of some components in their wire dtypes (a narrow component's
    low bits only), cut from one AES-CTR stream under `seed`, named by the whole request
    (Request.stream_name): each component has its own range of it, so no two share a pad."""
    spec = request.spec
    layout = _layout(spec)
    out = {name: torch.empty(spec.shapes()[name], dtype=torch.int64) for name in names if name not in layout}
    slots = {name: layout[name] for name in names if name in layout}
    if slots:
        start = min(slot.offset for slot in slots.values())
        end = max(slot.offset + slot.nbytes for slot in slots.values())
        stream = prg.keystream(prg.stream_key(seed, request.stream_name), end - start, start // prg.BLOCK)
        for name, slot in slots.items():
            at = slot.offset - start
            out[name] = torch.from_numpy(stream[at:at + slot.nbytes].view(_NUMPY[slot.dtype])).reshape(slot.shape)
    return out


def derive_parts(request: Request, seed: bytes, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """A party's seeded shares of some components (free ones at both parties, dependent at the
    party not corrected), as ring elements (a narrow component's sign-extended: only its low bits matter)."""
    return _widened(seeded_parts(request, seed, names))


def _widened(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Seeded parts as ring elements (a narrow component's sign-extended)."""
    return {name: values if values.dtype == torch.int64 else values.to(torch.int64) for name, values in parts.items()}


def seeded(request: Request, seed: bytes, component: str) -> torch.Tensor:
    """One component of `seeded_parts`."""
    return seeded_parts(request, seed, (component,))[component]


def derive(request: Request, seed: bytes, component: str) -> torch.Tensor:
    """One component of `derive_parts`."""
    return derive_parts(request, seed, (component,))[component]


_NUMPY = {torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8}


def corrected_party(request: Request) -> int:
    """The party that receives the corrections of `request`'s dependent components (the
    other derives its shares of them): a bit of the request's digest, so the dealer and
    both parties agree, and no party picks it."""
    return request.digest[0] & 1


DEFAULT_KEPT_BYTES = 128 << 20  # linked values the dealer keeps (an iteration's masks are named within it)


class MaterialMaker:
    """The dealer's side: both seeds, and the values later requests name.

    A mask is named by the products that use it (a truncation's output feeds several), so
    the free values of `linkable` components, and a mask's MaskParts, are kept in a
    least-recently-used store of at most `kept_bytes`: each is derived once, not once per
    request that names it. What is kept is a function of the seeds and the request alone,
    so keeping changes no answer."""

    def __init__(self, seed0: bytes, seed1: bytes, kept_bytes: int = DEFAULT_KEPT_BYTES) -> None:
        self.seeds = (seed0, seed1)
        self.kept_bytes = kept_bytes
        self._kept: OrderedDict[tuple[Request, str], torch.Tensor | kinds.MaskParts | list[torch.Tensor]] = \
            OrderedDict()
        self._kept_size = 0

    def answer(self, request: Request, party_id: int) -> list[torch.Tensor]:
        """What the dealer sends party `party_id` for `request`: to the corrected party, the
        corrections for the dependent components (value - the other party's seeded share, or
        XOR), then to both, the public ones (made for the first party that asks, kept for
        the other)."""
        spec = request.spec
        corrected = party_id == corrected_party(request)
        if not corrected and not spec.public:
            return []
        out = []
        own = None  # each party's own derivation of the free components, where needed
        pads = None  # the other party's seeded shares of the dependent components
        if spec.free and (spec.public or (corrected and spec.dependent and not self._kept_all(request))):
            names = [spec.free, spec.free]
            if corrected and spec.dependent:  # the other party's stream read once, for its pads too
                names[1 - party_id] = (*spec.free, *spec.dependent)
            parts = [seeded_parts(request, seed, wanted) for seed, wanted in zip(self.seeds, names, strict=True)]
            if corrected and spec.dependent:
                pads = {name: parts[1 - party_id].pop(name) for name in spec.dependent}
            own = [_widened(mine) for mine in parts]
        if corrected and spec.dependent:
            free = {name: self._full_value(request, name, own) for name in spec.free}
            free.update(self._linked_values(request))
            values = spec.dependent_values(free)
            if pads is None:
                pads = seeded_parts(request, self.seeds[1 - party_id], spec.dependent)
            for name in spec.dependent:  # dependent values are fresh tensors: corrected in place
                dtype = wire_dtype(request, name)  # a narrow component: only its low bits matter, so
                value, pad = values[name].to(dtype), pads[name].to(dtype)  # its correction is made narrow
                out.append(value.bitwise_xor_(pad) if is_xor(request, name) else value.sub_(pad))  # (wrapping)
        if spec.public:
            out.extend(self._public(request, own))
        return out

    def _kept_all(self, request: Request) -> bool:
        return all((request, name) in self._kept for name in request.spec.free)

    def _public(self, request: Request, own: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """The public values (both parties receive them: made once, kept for the second)."""
        key = (request, "public")
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._kept_size -= _nbytes(kept)
            return kept  # type: ignore[return-value]
        linked = self._linked_values(request)
        public = request.spec.public_values(own[0] | linked, own[1] | linked)
        values = [public[name] for name in request.spec.public]
        self._keep(key, values)
        return values

    def _full_value(self, request: Request, component: str,
                    own: list[dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """The value of a free component (the dealer's view): one party's own derivation when it
        is private to that party, else both parties' derivations combined (XOR or sum)."""
        key = (request, component)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept  # type: ignore[return-value]
        owner = request.spec.private.get(component)
        if owner is not None:
            value = own[owner][component] if own else derive(request, self.seeds[owner], component)
        else:
            p0, p1 = (d[component] for d in own) if own else (derive(request, seed, component) for seed in self.seeds)
            value = p0 ^ p1 if is_xor(request, component) else p0 + p1
        if component in request.spec.linkable:
            self._keep(key, value)
        return value

    def _linked_values(self, request: Request) -> dict[str, torch.Tensor | kinds.MaskParts]:
        """The components of earlier requests that `request` names (Spec.linked), as its
        dependent and public values read them."""
        return {name: self._linked(source, component) for name, (source, component) in request.spec.linked().items()}

    def _linked(self, source: Request, component: str) -> torch.Tensor | kinds.MaskParts:
        """A linked component as `dependent_values` reads it: a mask as its MaskParts."""
        if not kinds.is_mask(source, component):
            return self._full_value(source, component)
        key = (source, "parts")
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        parts = kinds.own_mask_parts(source, self._full_value(source, component))
        self._keep(key, parts)
        return parts

    def _keep(self, key: tuple[Request, str], value: torch.Tensor | kinds.MaskParts | list[torch.Tensor]) -> None:
        size = _nbytes(value)
        if size > self.kept_bytes:
            return
        self._kept[key] = value
        self._kept_size += size
        while self._kept_size > self.kept_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._kept_size -= _nbytes(dropped)


def _nbytes(value: torch.Tensor | kinds.MaskParts | list[torch.Tensor]) -> int:
    if isinstance(value, kinds.MaskParts):
        return _nbytes(value.base) + (0 if value.step is None else _nbytes(value.step))
    if isinstance(value, list):
        return sum(map(_nbytes, value))
    return value.numel() * value.element_size()


def answer(request: Request, party_id: int, seed0: bytes, seed1: bytes) -> list[torch.Tensor]:
    """`MaterialMaker(seed0, seed1).answer(request, party_id)`, keeping nothing between calls."""
    return MaterialMaker(seed0, seed1).answer(request, party_id)


def answer_names(request: Request, party_id: int) -> list[str]:
    """The components, in order, of `answer` for this party."""
    spec = request.spec
    return [*(spec.dependent if party_id == corrected_party(request) else ()), *spec.public]


def answer_specs(request: Request, party_id: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of each tensor of `answer` for this party."""
    shapes = request.spec.shapes()
    return [(tuple(shapes[name]), wire_dtype(request, name)) for name in answer_names(request, party_id)]


def answer_bytes(request: Request, party_id: int) -> int:
    """The bytes of `answer` for this party."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in answer_specs(request, party_id))
