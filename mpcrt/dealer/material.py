"""Correlated randomness, derived deterministically from two seeds.

The dealer holds seed0 (shared with party 0) and seed1 (shared with party 1). Every piece
of material is named by a `Request` (kind, the step's message id, a tag, parameters), and
each random component is an AES-CTR stream under a seed named by the whole request and the
component (`Request.label`: every parameter included). So party 0 derives all its parts
locally, party 1 derives its free parts (masks) locally, and only party 1's corrections for
dependent parts (c = a*b - c0, ...) travel. A request that differs from the program's in
any parameter names other streams: its answer is independent of the real one.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import torch

from mpcrt import prg, ringconv
from mpcrt.dealer import dcf
from mpcrt.scope import MessageId

# bilinear operators a Beaver triple can be shaped for; kwargs are the torch ones
BILINEAR: dict[str, Callable[..., torch.Tensor]] = {
    "mul": torch.mul,
    "matmul": torch.matmul,
    "conv2d": ringconv.conv2d,
    "conv_transpose2d": ringconv.conv_transpose2d,
}


@dataclass(frozen=True)
class Request:
    """What one step needs. params: hashable, msgpack-able description (shapes, op kwargs)."""

    kind: str
    mid: MessageId
    tag: str
    params: tuple

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the request's canonical encoding (its wire form): names its streams."""
        # msgpack writes tuples as arrays: the same bytes as the wire form, without converting
        return hashlib.sha256(msgpack.packb(("mpcrt-dealer", self.kind, self.mid, self.tag, self.params))).digest()

    def label(self, component: str) -> bytes:
        """The name of one component's stream: the whole request, then the component."""
        return self.digest + component.encode()

    def to_wire(self) -> tuple:
        """(kind, step id, tag, params): msgpack writes the tuples as arrays, as they are."""
        return (self.kind, self.mid, self.tag, self.params)

    @staticmethod
    def from_wire(item: Any) -> Request:
        """The request a peer sent, as msgpack read it (arrays as tuples: use_list=False; lists
        are converted); ValueError unless it is (kind, step id, tag, params)."""
        if isinstance(item, list):
            item = _hashable(item)
        if not (isinstance(item, tuple) and len(item) == 4):
            raise ValueError("a dealer request is an array of kind, step id, tag and parameters")
        kind, mid, tag, params = item
        if not (isinstance(kind, str) and isinstance(tag, str) and isinstance(mid, tuple)
                and all(isinstance(i, int) and not isinstance(i, bool) for i in mid)):
            raise ValueError(f"malformed dealer request {str(item)[:100]}")
        return Request(kind, mid, tag, params)


def _hashable(x: Any) -> Any:
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """torch's broadcasting of two shapes (torch.broadcast_shapes costs ~50 us a call, and
    every request's shapes are asked for several times)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def output_shape(op: str, a: tuple[int, ...], b: tuple[int, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    """Shape of op(a, b), by the formulas of torch's docs (torch's meta device would cost a
    second of imports the first time it is used)."""
    if op == "mul":
        return broadcast(a, b)
    if op == "matmul":
        a2, b2 = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
        if a2[-1] != b2[-2]:
            raise ValueError(f"matmul of shapes {a} and {b}")
        out = [*broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1]]
        if len(b) == 1:
            out.pop(-1)
        if len(a) == 1:
            out.pop(-2 if len(b) != 1 else -1)
        return tuple(out)
    stride, padding, dilation = (_pair(kwargs.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    groups = kwargs.get("groups", 1)
    spatial = list(zip(a[2:], b[2:], stride, padding, dilation, strict=True))
    if op == "conv2d":
        size = [(h + 2 * p - d * (k - 1) - 1) // s + 1 for h, k, s, p, d in spatial]
        return (a[0], b[0], *size)
    output_padding = _pair(kwargs.get("output_padding", 0))
    size = [(h - 1) * s - 2 * p + d * (k - 1) + op_ + 1
            for (h, k, s, p, d), op_ in zip(spatial, output_padding, strict=True)]
    return (a[0], b[1] * groups, *size)


def _bits_to_words(nbits: int) -> int:
    return (nbits + 63) // 64


def unpack_bool(words: torch.Tensor, nbits: int) -> torch.Tensor:
    """Bits of int64 words (bit j of word i is element 64*i + j), as bools, first nbits
    (numpy's unpackbits on the words' little-endian bytes: one pass, no int64 temporaries)."""
    raw = words.reshape(-1).contiguous().numpy().view(np.uint8)
    return torch.from_numpy(np.unpackbits(raw, count=nbits, bitorder="little").view(np.bool_))


def unpack_bits(words: torch.Tensor, nbits: int) -> torch.Tensor:
    """unpack_bool as int64 0/1."""
    return unpack_bool(words, nbits).to(torch.int64)


def unpack_index(rows: torch.Tensor, nbits: int) -> torch.Tensor:
    """Integers from bit rows of packed words (row i holds bit i of each of nbits elements)."""
    return sum((unpack_bits(row, nbits) << i for i, row in enumerate(rows)), torch.zeros(nbits, dtype=torch.int64))


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of unpack_bits: 0/1 values into int64 words, 64 to a word."""
    flat = bits.reshape(-1).to(torch.bool).numpy()
    packed = np.packbits(flat, bitorder="little")
    packed = np.concatenate([packed, np.zeros(-len(packed) % 8, np.uint8)])
    return torch.from_numpy(packed.view(np.int64).copy())


class Kind(ABC):
    """How one kind of material splits into free components and dependent ones."""

    free: tuple[str, ...] = ()
    dependent: tuple[str, ...] = ()
    public: tuple[str, ...] = ()  # made by the dealer from both parties' free parts, sent to both
    xor: frozenset[str] = frozenset()  # components XOR-shared as packed words, not additive
    # free components that one party alone knows: the value is that party's own derivation
    # (the other party derives but never uses its copy)
    private: dict[str, int] = {}  # noqa: RUF012 - read-only class-level table

    @abstractmethod
    def shapes(self, params: tuple) -> dict[str, tuple[int, ...]]:
        """Shape of every component."""

    @abstractmethod
    def dependent_values(self, free: dict[str, torch.Tensor], params: tuple) -> dict[str, torch.Tensor]:
        """The secret dependent values, from the full free values (and the linked ones)."""

    def linked(self, params: tuple) -> dict[str, tuple[Request, str]]:
        """Free components of earlier requests this kind's dependent values are made from
        (the dealer rebuilds them from the seeds; the parties never see them)."""
        return {}

    def public_values(self, free0: dict[str, torch.Tensor], free1: dict[str, torch.Tensor],
                      params: tuple) -> dict[str, torch.Tensor]:
        """Values both parties receive, from each party's own free parts (none by default)."""
        return {}

    def widths(self, params: tuple) -> dict[str, int]:
        """Dependent components the protocol uses only times 2^(64 - w), with their w: only
        the low w bits of a share matter, so party 0 derives and party 1 receives w-bit
        integers (`wire_dtype`). The rest are full ring elements (64)."""
        return {}

    def prepare(self, parts: dict[str, torch.Tensor], params: tuple, party_id: int) -> dict[str, torch.Tensor]:
        """A party's material in the form its protocol reads online, made when the material is
        (the offline phase, when prefetched): work moved out of the online phase."""
        return parts


class Triple(Kind):
    """Beaver triple for a bilinear op: params (op, shape_a, shape_b, kwargs items)."""

    free = ("a", "b")
    dependent = ("c",)

    def shapes(self, params: tuple) -> dict[str, tuple[int, ...]]:
        op, shape_a, shape_b, kwargs = params
        return {"a": tuple(shape_a), "b": tuple(shape_b), "c": output_shape(op, shape_a, shape_b, dict(kwargs))}

    def dependent_values(self, free, params):
        op, _, _, kwargs = params
        return {"c": BILINEAR[op](free["a"], free["b"], **dict(kwargs))}


class Square(Kind):
    """(a, a*a): one opening instead of two for x*x. params (shape,)."""

    free = ("a",)
    dependent = ("c",)

    def shapes(self, params):
        return {"a": tuple(params[0]), "c": tuple(params[0])}

    def dependent_values(self, free, params):
        return {"c": free["a"] * free["a"]}


TRUNCATION_OFFSET = 1 << 62  # truncation shifts x by 2^62 so that x + 2^62 is non-negative


class Truncation(Kind):
    """r, r >> f (logical) and MSB(r), for the 1-round exact truncation. params (shape, f)."""

    free = ("r",)
    dependent = ("r_high", "r_msb")

    def shapes(self, params):
        shape = tuple(params[0])
        return {"r": shape, "r_high": shape, "r_msb": shape}

    def dependent_values(self, free, params):
        f = params[1]
        r = free["r"]
        return {"r_high": logical_shift(r, f), "r_msb": (r < 0).to(torch.int64)}

    def widths(self, params):
        return {"r_msb": params[1]}  # prepare reads it as r_msb << (64 - bits)

    def prepare(self, parts, params, party_id):
        """What ops.truncation reads: the mask (party 0 adds the offset 2^62 to it), and this
        party's share of the result's correction for c >= 0 (wrapped, as MSB(r) says) and for
        c < 0 (not wrapped): the online phase picks one per element. Party 0's include the
        offset's removal and, for c < 0, the difference between the logical shift of c and
        the arithmetic one it computes."""
        bits = params[1]
        not_wrapped = -parts["r_high"]
        if party_id == 0:
            not_wrapped = not_wrapped - (TRUNCATION_OFFSET >> bits)
        wrapped = not_wrapped + (parts["r_msb"] << (64 - bits))
        if party_id == 0:  # party 0 adds c >> bits (arithmetic), 2^(64 - bits) short of the logical shift where c < 0
            not_wrapped = not_wrapped + (1 << (64 - bits) if bits > 1 else -(1 << 63))
        return {"r": parts["r"] + TRUNCATION_OFFSET if party_id == 0 else parts["r"],
                "wrapped": wrapped, "not_wrapped": not_wrapped}


class AndTriple(Kind):
    """Boolean Beaver triple on packed words: c = a & b. params (shape,), or (shape_a,
    shape_b) with b broadcast against a: one operand's mask serves several ANDs, so that
    operand is opened once."""

    free = ("a", "b")
    dependent = ("c",)
    xor = frozenset({"a", "b", "c"})

    def shapes(self, params):
        shape_a, shape_b = (tuple(params[0]), tuple(params[-1]))
        return {"a": shape_a, "b": shape_b, "c": broadcast(shape_a, shape_b)}

    def dependent_values(self, free, params):
        return {"c": free["a"] & free["b"]}


@functools.lru_cache(maxsize=1024)
def product_subsets(terms: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Every set of two or more variables within some term, once each, sorted, in a fixed
    order (first appearance): the mask products a multi-input AND needs. Cached: the
    dealer and both parties ask for the same terms several times per request."""
    return tuple(dict.fromkeys(subset for term in terms for size in range(2, len(term) + 1)
                               for subset in itertools.combinations(sorted(term), size)))


def subset_products(a: torch.Tensor, subsets: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """The AND of a's rows over each subset, in order, written in place: each subset from its
    prefix (a subset of the same term, so one of `subsets`, met before it) and one AND."""
    out = a.new_empty((len(subsets), *a.shape[1:]))
    position: dict[tuple[int, ...], int] = {}
    for i, subset in enumerate(subsets):
        first = a[subset[0]] if len(subset) == 2 else out[position[subset[:-1]]]
        torch.bitwise_and(first, a[subset[-1]], out=out[i])
        position[subset] = i
    return out


class MultiAndTriple(Kind):
    """For ANDs of several bits each (ops.boolean.monomials): masks a for the k input rows
    and the XOR-shared products of the masks over every subset a term needs. params
    (shape (k, ...), terms), or with a third, (pand source, block, ((row, ids), ...)): those
    rows are masked already, by a ^ b[index] of that `pand` request (ops.boolean.OpenedRows),
    block by block (ids: its operand row per block of `block` words, -1 for mask 0), and
    their fresh masks go unused."""

    free = ("a",)
    dependent = ("c",)
    xor = frozenset({"a", "c"})

    def shapes(self, params):
        shape, terms = tuple(params[0]), params[1]
        return {"a": shape, "c": (len(product_subsets(terms)), *shape[1:])}

    def linked(self, params):
        if len(params) < 3:
            return {}
        pand = _source_request(params[2][0])
        if pand.kind != "pand":
            raise ValueError(f"known rows of a multi-input AND name a {pand.kind!r} request, not 'pand'")
        return {"pa": (pand, "a"), "pb": (pand, "b")}

    def dependent_values(self, free, params):
        a = free["a"]
        if len(params) > 2:
            source, block, rows = params[2]
            index = list(_source_request(source).params[2])
            masks = free["pa"] ^ free["pb"][index]
            if masks.shape[1] != block:
                raise ValueError(f"known rows in blocks of {block} words, their pand request has {masks.shape[1]}")
            masks = torch.cat([masks, masks.new_zeros(1, block)])  # id -1: the zero row
            a = a.clone()
            for row, ids in rows:
                a[row] = masks[list(ids)].reshape(-1)
        return {"c": subset_products(a, product_subsets(params[1]))}


class PrivateAndTriple(Kind):
    """For x & y with x known to party 0 alone and y to party 1 alone: a masks x and only
    party 0 knows it, b masks y and only party 1 knows it, c = a & b[index] is XOR-shared
    (row i of x meets row index[i] of y, so one row of y serves several of x). Each party
    then sends its masked operand once. params (shape_a, shape_b, index)."""

    free = ("a", "b")
    dependent = ("c",)
    xor = frozenset({"a", "b", "c"})
    private = {"a": 0, "b": 1}  # noqa: RUF012

    def shapes(self, params):
        return {"a": tuple(params[0]), "b": tuple(params[1]), "c": tuple(params[0])}

    def dependent_values(self, free, params):
        return {"c": free["a"] & free["b"][list(params[2])]}


class RandomBits(Kind):
    """Random bits, XOR-shared packed 64 to a word and additively shared as ring 0/1.

    params (nbits,). The packed words are free; the additive copy is dependent.
    """

    free = ("packed",)
    dependent = ("arith",)
    xor = frozenset({"packed"})

    def shapes(self, params):
        return {"packed": (_bits_to_words(params[0]),), "arith": (params[0],)}

    def dependent_values(self, free, params):
        return {"arith": unpack_bits(free["packed"], params[0])}


class Comparison(Kind):
    """A DCF for the sign of x given the opened x + r. params (n,).

    Free: the mask r (additive) and each party's DCF root seed. Dependent: MSB(r) as ring
    shares. Public: the DCF correction words for beta * [y < low63(r)] with beta = 1 - 2 MSB(r),
    so that MSB(r) + DCF(y) shares MSB(r) xor [y < low63(r)] (see ops.compare).
    """

    free = ("r", "seed")
    dependent = ("msb_r",)
    public = ("s_cw", "v_cw", "t_cw", "last")
    xor = frozenset({"seed"})
    width = 1

    def shapes(self, params):
        n = params[0]
        levels = dcf.DOMAIN_BITS
        return {"r": (n,), "seed": (n, 2), **{name: (n,) for name in self.dependent},
                "s_cw": (levels, n, 2), "v_cw": (levels, n, self.width), "t_cw": (n, 2), "last": (n, self.width)}

    def dependent_values(self, free, params):
        return {"msb_r": (free["r"] < 0).long()}

    def payload(self, r: torch.Tensor) -> torch.Tensor:
        """beta (n, width) for the mask r."""
        return (1 - 2 * (r < 0).long())[:, None]

    def public_values(self, free0, free1, params):
        r = free0["r"] + free1["r"]
        return dcf.keygen(r & ((1 << 63) - 1), self.payload(r), free0["seed"], free1["seed"])


class SignTimesMask(Comparison):
    """A DCF giving, with the sign of x, the sign times the mask r (ReLU in the opening's
    round: ops.activations). params (n,). beta = (1 - 2 MSB(r)) * (1, r); dependent MSB(r)
    and MSB(r) * r as ring shares."""

    dependent = ("msb_r", "msb_r_r")
    width = 2

    def dependent_values(self, free, params):
        msb = (free["r"] < 0).long()
        return {"msb_r": msb, "msb_r_r": msb * free["r"]}

    def payload(self, r):
        return super().payload(r) * torch.stack([torch.ones_like(r), r], dim=1)


class Mask(Kind):
    """A fresh mask a for opening x - a ahead of products (see ops.products.open_masked).
    params (shape,)."""

    free = ("a",)

    def shapes(self, params):
        return {"a": tuple(params[0])}

    def dependent_values(self, free, params):
        return {}


def mask_source(request: Request) -> tuple:
    """How a masked product names an operand's mask: the request that made it, and the
    shape the mask is viewed as (its own; shares.KnownMask.reshape changes it, a reshape
    keeping the elements' order)."""
    first = request.params[0]  # a shape, or a count (random bits)
    return (request.kind, tuple(request.mid), request.tag, request.params,
            tuple(first) if isinstance(first, tuple | list) else (first,))


def _source_request(source: tuple) -> Request:
    kind, mid, tag, params, _ = source
    return Request(kind, tuple(mid), tag, _hashable(params))


def truncation_masks(r: torch.Tensor, bits: int) -> torch.Tensor:
    """The two values a truncation's output is masked by, stacked (not wrapped, wrapped): its
    output y is (c >> bits) + mask[c >= 0]. The corrections are linear in the material, so
    both parties' prepared corrections add up to party 0's form on the full values."""
    full = {"r": r, **Truncation().dependent_values({"r": r}, ((), bits))}
    prepared = Truncation().prepare(full, ((), bits), 0)
    return torch.stack([prepared["not_wrapped"], prepared["wrapped"]])


def _mask_size(source: tuple) -> tuple[int, tuple[int, ...]]:
    """(variants, shape) of the mask a request made, as viewed: a truncation's has two."""
    request = _source_request(source)
    return (2 if request.kind == "trunc" else 1), tuple(source[4])


def _mask_bits(source: tuple) -> int:
    """How far apart a mask's variants are: 2^(64 - bits) times an integer (a truncation's
    bits; 64 for a one-variant mask)."""
    request = _source_request(source)
    return request.params[1] if request.kind == "trunc" else 64


MASK_COMPONENTS = {"trunc": "r", "mask": "a"}  # the requests whose masks products may name


def _mask_link(source: tuple) -> tuple[Request, str]:
    request = _source_request(source)
    if request.kind not in MASK_COMPONENTS:
        raise ValueError(f"a masked product names a {request.kind!r} request; only "
                         f"{sorted(MASK_COMPONENTS)} make masks the dealer may multiply")
    return request, MASK_COMPONENTS[request.kind]


@dataclass(frozen=True)
class MaskParts:
    """A mask's variants as base + i * step * 2^(64 - bits), i = 0 or 1 (a truncation's two
    masks differ by a multiple of 2^(64 - bits)): so a product of variants is the bases'
    product plus terms of which only the low bits matter, sent as narrow integers."""

    base: torch.Tensor
    step: torch.Tensor | None  # None: one variant
    bits: int


def _mask_parts(source: tuple, full: torch.Tensor) -> MaskParts:
    """The mask's parts, in its viewed shape, from the full free component of its request."""
    request, shape = _source_request(source), tuple(source[4])
    if request.kind != "trunc":
        return MaskParts(full.reshape(shape), None, 64)
    bits = request.params[1]
    not_wrapped, wrapped = truncation_masks(full, bits).reshape(2, *shape)
    return MaskParts(not_wrapped, (wrapped - not_wrapped) >> (64 - bits), bits)


def times_power(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """x * 2^exponent in the ring (0 from 2^64 on)."""
    return x << exponent if exponent < 64 else torch.zeros_like(x)


NONE = (0,)  # the shape of a component a request's masks do not need


def _absent() -> torch.Tensor:
    """The value of such a component."""
    return torch.empty(NONE, dtype=torch.int64)


class MaskedProduct(Kind):
    """For x * y (elementwise, broadcasting) when each operand is already public up to a mask
    the dealer knows: a truncation's output (two possible masks, picked online by the
    opened value) or a fresh opening (one). params (source_x, source_y), each from
    `mask_source`; a square names one source twice.

    With variants X_i = N + i D 2^(64 - bx) and Y_j = L + j E 2^(64 - by) (`MaskParts`),
      X_i Y_j = N L + i (D L) 2^(64 - bx) + j (E N) 2^(64 - by) + i j (D E) 2^(128 - bx - by),
    so the dealer shares c = N L in full and cx = D L, cy = E N, cxy = D E only in their low
    bx, by and bx + by - 64 bits (cxy where that is positive; none of a one-variant mask).
    A square: c = N^2, cx = D N (times 2^(65 - bx)), cxy = D^2. `prepare` expands them into
    every variant's product, variant-major, as the online phase reads them."""

    dependent = ("c", "cx", "cy", "cxy")

    def shapes(self, params):
        (vx, shape_x), (vy, shape_y) = (_mask_size(src) for src in params)
        out = broadcast(shape_x, shape_y)
        both = vx == vy == 2 and _mask_bits(params[0]) + _mask_bits(params[1]) > 64
        square = params[0] == params[1]
        return {"c": out, "cx": out if vx == 2 else NONE, "cy": out if vy == 2 and not square else NONE,
                "cxy": out if both else NONE}

    def widths(self, params):
        bx, by = (_mask_bits(src) for src in params)
        return {"cx": bx, "cy": by, "cxy": max(bx + by - 64, 1)}

    def linked(self, params):
        return {f"m{i}": _mask_link(src) for i, src in enumerate(params)}

    def dependent_values(self, free, params):
        x, y = (_mask_parts(src, free[f"m{i}"]) for i, src in enumerate(params))
        shapes = self.shapes(params)
        none = _absent()
        cross = (x.step * y.step) if shapes["cxy"] != NONE else none  # type: ignore[operator]
        if params[0] == params[1]:
            return {"c": x.base * x.base, "cx": none if x.step is None else x.step * x.base, "cy": none, "cxy": cross}
        return {"c": x.base * y.base, "cx": none if x.step is None else x.step * y.base,
                "cy": none if y.step is None else y.step * x.base, "cxy": cross}

    def prepare(self, parts, params, party_id):
        (vx, _), (vy, _) = (_mask_size(src) for src in params)
        bx, by = (_mask_bits(src) for src in params)
        c, cx, cy, cxy = (parts[name] for name in self.dependent)
        square = params[0] == params[1]
        out = c.unsqueeze(0).repeat(vx if square else vx * vy, *(1,) * c.dim())  # variant i vy + j: X_i Y_j
        if vx == 2:
            out[1 if square else slice(vy, None)] += times_power(cx, (65 if square else 64) - bx)
        if vy == 2 and not square:
            out[1::2] += times_power(cy, 64 - by)
        if cxy.numel():
            out[-1] += times_power(cxy, 128 - bx - by)
        return {"c": out}


class MaskedTimesBit(Kind):
    """For x * b, x masked (see MaskedProduct) and b a bit opened as b xor rho with rho from
    a `bits` request: the products of x's mask variants with rho (as ring 0/1), as
    c = N rho in full and cx = D rho in x's low bits (X_i rho = N rho + i (D rho) 2^(64 - bx));
    `prepare` expands them. params (source_x, source_bits), each from `mask_source`."""

    dependent = ("c", "cx")

    def shapes(self, params):
        variants, shape = _mask_size(params[0])
        return {"c": shape, "cx": shape if variants == 2 else NONE}

    def widths(self, params):
        return {"cx": _mask_bits(params[0])}

    def linked(self, params):
        bits = _source_request(params[1])
        if bits.kind != "bits":
            raise ValueError(f"a bit product names a {bits.kind!r} request for its random bit, not 'bits'")
        return {"m": _mask_link(params[0]), "rho": (bits, "packed")}

    def dependent_values(self, free, params):
        shape = _mask_size(params[0])[1]
        rho = unpack_bits(free["rho"], math.prod(shape)).reshape(shape)
        x = _mask_parts(params[0], free["m"])
        return {"c": x.base * rho, "cx": _absent() if x.step is None else x.step * rho}

    def prepare(self, parts, params, party_id):
        c = parts["c"]
        if not parts["cx"].numel():
            return {"c": c.unsqueeze(0)}
        out = torch.empty((2, *c.shape), dtype=c.dtype)  # both variants filled in place: no stack
        out[0] = c
        torch.add(c, times_power(parts["cx"], 64 - _mask_bits(params[0])), out=out[1])
        return {"c": out}


class PieceTable(Kind):
    """For a polynomial of degree <= 2 picked per element by a secret segment index, at a
    masked point x = p + phi M (see ops.piecewise): the index, XOR-shared in `bits` rows of
    packed bits, is opened as u = index xor delta for a random delta per element (u is
    uniform whatever the index), and the dealer shares, for every u, what the polynomial of
    segment u xor delta needs besides p: A = c0 + c1 phi M + c2 (phi M)^2, B = c1 + 2 c2 phi M
    and C = c2, so that c0 + c1 x + c2 x^2 = A + B p + C p^2 is local. params (n, bits,
    (c0s, c1s, c2s) ring integers per segment, phi, source_x); segments past the lists have
    zero coefficients.

    `table` holds (A, B, C) for M's first variant N. A truncation's second variant
    N + D 2^(64 - b) (`MaskParts`) changes A by (c1 phi D + 2 c2 phi^2 N D) 2^(64 - b)
    + c2 phi^2 D^2 2^(128 - 2b) and B by 2 c2 phi D 2^(64 - b), C not at all: `steps` holds
    those two in their low b bits, `cross` the last in its low 2b - 64 (where positive).
    `prepare` expands them into one row (A, B, C) per u and variant, variant-major."""

    free = ("delta",)
    dependent = ("table", "steps", "cross")
    xor = frozenset({"delta"})

    def shapes(self, params):
        n, bits, _, _, source = params
        two = _mask_size(source)[0] == 2
        return {"delta": (bits, _bits_to_words(n)), "table": (n, 1 << bits, 3),
                "steps": (n, 1 << bits, 2) if two else NONE,
                "cross": (n, 1 << bits) if two and 2 * _mask_bits(source) > 64 else NONE}

    def widths(self, params):
        b = _mask_bits(params[4])
        return {"steps": b, "cross": max(2 * b - 64, 1)}

    def linked(self, params):
        return {"m": _mask_link(params[4])}

    def dependent_values(self, free, params):
        n, bits, coefficients, phi, source = params
        rows = 1 << bits
        padded = torch.zeros((rows, 3), dtype=torch.int64)
        padded[:len(coefficients[0])] = torch.tensor(coefficients, dtype=torch.int64).t()
        # (c0, c1, c2) of segment u xor delta for every u, for each of the 2^bits deltas: one
        # gather by each element's delta then fills its table (n, rows, 3)
        by_delta = padded[torch.arange(rows).unsqueeze(1) ^ torch.arange(rows)]
        table = by_delta[unpack_index(free["delta"], n)]
        c0, c1, c2 = table.unbind(-1)
        mask = _mask_parts(source, free["m"])
        m = mask.base.reshape(n, 1) * phi
        a = c2 * m
        b = torch.add(c1, a, alpha=2)  # B = c1 + 2 c2 m
        a.add_(c1).mul_(m).add_(c0)  # A = c0 + m (c1 + c2 m)
        none = _absent()
        steps = cross = none
        if mask.step is not None:
            d = mask.step.reshape(n, 1) * phi
            steps = torch.stack([b * d, c2 * d * 2], -1)
            if self.shapes(params)["cross"] != NONE:
                cross = c2 * d * d
        c0.copy_(a)  # the table's columns become (A, B, C) in place
        c1.copy_(b)
        return {"table": table, "steps": steps, "cross": cross}

    def prepare(self, parts, params, party_id):
        """The table as (3, n * rows): A, B and C each picked for all elements by one index_select."""
        table, steps = parts["table"].permute(2, 0, 1), parts["steps"]  # (3, n, rows)
        if not steps.numel():
            return {"delta": parts["delta"], "table": table.reshape(3, -1).contiguous()}
        rows, shift = table.shape[2], 64 - _mask_bits(params[4])
        out = torch.empty(3, table.shape[1], 2 * rows, dtype=table.dtype)  # filled in place: no cat
        out[:, :, :rows] = table
        out[:, :, rows:] = table
        out[:2, :, rows:] += times_power(steps, shift).permute(2, 0, 1)
        if parts["cross"].numel():
            out[0, :, rows:] += times_power(parts["cross"], 2 * shift)
        return {"delta": parts["delta"], "table": out.reshape(3, -1)}


KINDS: dict[str, Kind] = {"triple": Triple(), "square": Square(), "trunc": Truncation(),
                          "and": AndTriple(), "pand": PrivateAndTriple(),
                          "mand": MultiAndTriple(), "bits": RandomBits(), "dcf": Comparison(),
                          "dcf_relu": SignTimesMask(),
                          "mask": Mask(), "mprod": MaskedProduct(), "mbit": MaskedTimesBit(),
                          "lut": PieceTable()}

def logical_shift(v: torch.Tensor, f: int) -> torch.Tensor:
    """v >> f treating v as an unsigned 64-bit integer."""
    if f == 0:
        return v.clone()
    return (v >> f) & ((1 << (64 - f)) - 1)


def is_xor(kind: str, component: str) -> bool:
    return component in KINDS[kind].xor


WIRE_DTYPES = ((8, torch.int8), (16, torch.int16), (32, torch.int32), (64, torch.int64))


def wire_dtype(request: Request, component: str) -> torch.dtype:
    """The narrowest integer type holding the bits of a component's shares that matter
    (Kind.widths): what party 0 derives and party 1 receives."""
    width = KINDS[request.kind].widths(request.params).get(component, 64)
    return next(dtype for bits, dtype in WIRE_DTYPES if width <= bits)


def derive(request: Request, seed: bytes, component: str) -> torch.Tensor:
    """A party's seeded share of one component (free ones at both parties, dependent at party
    0), as ring elements (a narrow component's sign-extended: only its low bits matter)."""
    shape = KINDS[request.kind].shapes(request.params)[component]
    if not math.prod(shape):  # a component this request's masks do not need: no keystream, no label
        return torch.empty(shape, dtype=torch.int64)
    dtype = wire_dtype(request, component)
    values = prg.named_ring(shape, seed, request.label(component), dtype)
    return values if dtype == torch.int64 else values.to(torch.int64)


def answer(request: Request, party_id: int, seed0: bytes, seed1: bytes) -> list[torch.Tensor]:
    """What the dealer sends party `party_id` for `request`: party 1's corrections for the
    dependent components (value - party 0's seeded share, or XOR), then the public ones."""
    kind = KINDS[request.kind]
    if party_id == 0 and not kind.public:
        return []
    out = []
    if party_id == 1 and kind.dependent:
        free = {name: _full_value(request, name, seed0, seed1) for name in kind.free}
        free.update({name: _full_value(source, component, seed0, seed1)
                     for name, (source, component) in kind.linked(request.params).items()})
        values = kind.dependent_values(free, request.params)
        for name in kind.dependent:  # dependent values are fresh tensors: corrected in place
            s0 = derive(request, seed0, name)
            correction = values[name].bitwise_xor_(s0) if is_xor(request.kind, name) else values[name].sub_(s0)
            dtype = wire_dtype(request, name)
            out.append(correction if dtype == torch.int64 else correction.to(dtype))  # the low bits, wrapped
    if kind.public:
        own = [{name: derive(request, seed, name) for name in kind.free} for seed in (seed0, seed1)]
        public = kind.public_values(own[0], own[1], request.params)
        out.extend(public[name] for name in kind.public)
    return out


def _full_value(request: Request, component: str, seed0: bytes, seed1: bytes) -> torch.Tensor:
    """The value of a free component (the dealer's view): one party's own derivation when it
    is private to that party, else both parties' derivations combined (XOR or sum)."""
    owner = KINDS[request.kind].private.get(component)
    if owner is not None:
        return derive(request, (seed0, seed1)[owner], component)
    parts = derive(request, seed0, component), derive(request, seed1, component)
    return parts[0] ^ parts[1] if is_xor(request.kind, component) else parts[0] + parts[1]


def answer_names(request: Request, party_id: int) -> list[str]:
    """The components, in order, of `answer` for this party."""
    kind = KINDS[request.kind]
    return [*(kind.dependent if party_id == 1 else ()), *kind.public]


def answer_specs(request: Request, party_id: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of each tensor of `answer` for this party."""
    shapes = KINDS[request.kind].shapes(request.params)
    return [(tuple(shapes[name]), wire_dtype(request, name)) for name in answer_names(request, party_id)]


def answer_bytes(request: Request, party_id: int) -> int:
    """The bytes of `answer` for this party."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in answer_specs(request, party_id))
