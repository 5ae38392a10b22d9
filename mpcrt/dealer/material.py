"""Correlated randomness, derived deterministically from two seeds.

The dealer holds seed0 (shared with party 0) and seed1 (shared with party 1). Every piece
of material is named by a `Request` (the step's message id and a typed spec of its kind,
mpcrt.dealer.kinds), and each random component is an AES-CTR stream under a seed named by
the whole request and the component (`Request.label`: every parameter included). Both
parties derive their free parts (masks) locally; one of them, the request's
`corrected_party`, receives corrections for the dependent parts (c = a*b - c_other, ...),
and the other derives its shares of those from its seed too. The corrected party is half
the requests' each (by the request's digest: MP-SPDZ's rotating "king"), so each
owner-to-server link carries about half the material. A request that differs from the
program's in any parameter names other streams: its answer is independent of the real one.
"""

from __future__ import annotations

import math

import torch

from mpcrt import prg
from mpcrt.dealer import kinds  # noqa: F401 - defines every kind (KINDS)
from mpcrt.dealer.request import KINDS, Request

__all__ = ["KINDS", "Request", "answer", "answer_bytes", "answer_names", "answer_specs", "corrected_party", "derive",
           "wire_dtype"]


def is_xor(request: Request, component: str) -> bool:
    return component in request.spec.xor


WIRE_DTYPES = ((8, torch.int8), (16, torch.int16), (32, torch.int32), (64, torch.int64))


def wire_dtype(request: Request, component: str) -> torch.dtype:
    """The narrowest integer type holding the bits of a component's shares that matter
    (Spec.widths): what party 0 derives and party 1 receives."""
    width = request.spec.widths().get(component, 64)
    return next(dtype for bits, dtype in WIRE_DTYPES if width <= bits)


def derive(request: Request, seed: bytes, component: str) -> torch.Tensor:
    """A party's seeded share of one component (free ones at both parties, dependent at the
    party not corrected), as ring elements (a narrow component's sign-extended: only its low bits matter)."""
    shape = request.spec.shapes()[component]
    if not math.prod(shape):  # a component this request's masks do not need: no keystream, no label
        return torch.empty(shape, dtype=torch.int64)
    dtype = wire_dtype(request, component)
    values = prg.named_ring(shape, seed, request.label(component), dtype)
    return values if dtype == torch.int64 else values.to(torch.int64)


def corrected_party(request: Request) -> int:
    """The party that receives the corrections of `request`'s dependent components (the
    other derives its shares of them): a bit of the request's digest, so the dealer and
    both parties agree, and no party picks it."""
    return request.digest[0] & 1


def answer(request: Request, party_id: int, seed0: bytes, seed1: bytes) -> list[torch.Tensor]:
    """What the dealer sends party `party_id` for `request`: to the corrected party, the
    corrections for the dependent components (value - the other party's seeded share, or
    XOR), then to both, the public ones."""
    spec = request.spec
    corrected = party_id == corrected_party(request)
    if not corrected and not spec.public:
        return []
    out = []
    if corrected and spec.dependent:
        free = {name: _full_value(request, name, seed0, seed1) for name in spec.free}
        free.update({name: _full_value(source, component, seed0, seed1)
                     for name, (source, component) in spec.linked().items()})
        values = spec.dependent_values(free)
        pad_seed = (seed0, seed1)[1 - party_id]
        for name in spec.dependent:  # dependent values are fresh tensors: corrected in place
            s0 = derive(request, pad_seed, name)
            correction = values[name].bitwise_xor_(s0) if is_xor(request, name) else values[name].sub_(s0)
            dtype = wire_dtype(request, name)
            out.append(correction if dtype == torch.int64 else correction.to(dtype))  # the low bits, wrapped
    if spec.public:
        own = [{name: derive(request, seed, name) for name in spec.free} for seed in (seed0, seed1)]
        public = spec.public_values(own[0], own[1])
        out.extend(public[name] for name in spec.public)
    return out


def _full_value(request: Request, component: str, seed0: bytes, seed1: bytes) -> torch.Tensor:
    """The value of a free component (the dealer's view): one party's own derivation when it
    is private to that party, else both parties' derivations combined (XOR or sum)."""
    owner = request.spec.private.get(component)
    if owner is not None:
        return derive(request, (seed0, seed1)[owner], component)
    parts = derive(request, seed0, component), derive(request, seed1, component)
    return parts[0] ^ parts[1] if is_xor(request, component) else parts[0] + parts[1]


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
