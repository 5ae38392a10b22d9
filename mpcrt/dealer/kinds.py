"""Every kind of dealer material: its parameters, its components, what the protocol reads.

Each kind is a frozen dataclass (a `Spec`): its fields are the request's parameters, its
class attributes say which components are free (seeded at both parties), dependent
(party 0 seeded, party 1 sent a correction) or public (sent to both), and its `Material`
dataclass is what `DealerClient.get` hands the protocol. `dependent_values` is the dealer's
formula; `prepare` turns a party's parts into the form its protocol reads online.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mpcrt import ringconv
from mpcrt.dealer import dcf
from mpcrt.dealer.packing import bit_slice, bits_to_words, unpack_bits, unpack_index
from mpcrt.dealer.request import MaskRef, Request, Shape, Spec

Tensor = torch.Tensor

# bilinear operators a Beaver triple can be shaped for; kwargs are the torch ones
BILINEAR: dict[str, Callable[..., Tensor]] = {
    "mul": torch.mul,
    "matmul": torch.matmul,
    "conv2d": ringconv.conv2d,
    "conv_transpose2d": ringconv.conv_transpose2d,
}

NONE: Shape = (0,)  # the shape of a component a request's masks do not need


def _absent() -> Tensor:
    """The value of such a component."""
    return torch.empty(NONE, dtype=torch.int64)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def broadcast(a: Shape, b: Shape) -> Shape:
    """torch's broadcasting of two shapes, in plain Python (every request's shapes are asked
    for several times, and torch.broadcast_shapes is slow for that)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def output_shape(op: str, a: Shape, b: Shape, kwargs: dict[str, Any]) -> Shape:
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
    if op not in ("conv2d", "conv_transpose2d"):
        raise ValueError(f"no triple for the operator {op!r}; one of {sorted(BILINEAR)}")
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


def times_power(x: Tensor, exponent: int) -> Tensor:
    """x * 2^exponent in the ring (0 from 2^64 on)."""
    return x << exponent if exponent < 64 else torch.zeros_like(x)


def logical_shift(v: Tensor, f: int) -> Tensor:
    """v >> f treating v as an unsigned 64-bit integer."""
    if f == 0:
        return v.clone()
    return (v >> f) & ((1 << (64 - f)) - 1)


# ---- products ------------------------------------------------------------------------

@dataclass(frozen=True)
class TripleMaterial:
    a: Tensor  # masks x
    b: Tensor  # masks y
    c: Tensor  # op(a, b)


@dataclass(frozen=True)
class BeaverTriple(Spec[TripleMaterial]):
    """(a, b, c = op(a, b)) for a bilinear op (ops.products); kwargs: the op's torch
    keyword arguments, sorted."""

    kind: ClassVar[str] = "triple"
    Material: ClassVar[type] = TripleMaterial
    free: ClassVar[tuple[str, ...]] = ("a", "b")
    dependent: ClassVar[tuple[str, ...]] = ("c",)

    op: str
    shape_a: Shape
    shape_b: Shape
    kwargs: tuple[tuple[str, int | tuple[int, ...]], ...] = ()

    def shapes(self):
        return {"a": self.shape_a, "b": self.shape_b,
                "c": output_shape(self.op, self.shape_a, self.shape_b, dict(self.kwargs))}

    def dependent_values(self, free):
        return {"c": BILINEAR[self.op](free["a"], free["b"], **dict(self.kwargs))}


@dataclass(frozen=True)
class SquareMaterial:
    a: Tensor  # masks x
    c: Tensor  # a * a


@dataclass(frozen=True)
class SquarePair(Spec[SquareMaterial]):
    """(a, a * a): one opening instead of two for x * x."""

    kind: ClassVar[str] = "square"
    Material: ClassVar[type] = SquareMaterial
    free: ClassVar[tuple[str, ...]] = ("a",)
    dependent: ClassVar[tuple[str, ...]] = ("c",)

    shape: Shape

    def shapes(self):
        return {"a": self.shape, "c": self.shape}

    def dependent_values(self, free):
        return {"c": free["a"] * free["a"]}


# ---- masks a later product may name ----------------------------------------------------

@dataclass(frozen=True)
class MaskParts:
    """A mask's variants as base + i * step * 2^(64 - bits), i = 0 or 1 (a truncation's two
    masks differ by a multiple of 2^(64 - bits)): so a product of variants is the bases'
    product plus terms of which only the low bits matter, sent as narrow integers."""

    base: Tensor
    step: Tensor | None  # None: one variant
    bits: int

    def reshaped(self, shape: Shape) -> MaskParts:
        """The same parts viewed in another shape of as many elements (a MaskRef's view)."""
        return MaskParts(self.base.reshape(shape), None if self.step is None else self.step.reshape(shape), self.bits)


TRUNCATION_OFFSET = 1 << 62  # truncation shifts x by 2^62 so that x + 2^62 is non-negative


@dataclass(frozen=True)
class TruncationMaterial:
    r: Tensor  # the opening's mask (party 0's includes the offset 2^62)
    wrapped: Tensor  # this party's share of the output's correction where c >= 0
    not_wrapped: Tensor  # ... and where c < 0


@dataclass(frozen=True)
class TruncationPair(Spec[TruncationMaterial]):
    """r, r >> bits (logical) and MSB(r), for the 1-round exact truncation (ops.truncation).
    Its output is public up to one of two masks: a later product may name it (MaskRef)."""

    kind: ClassVar[str] = "trunc"
    linkable: ClassVar[frozenset[str]] = frozenset({"r"})
    Material: ClassVar[type] = TruncationMaterial
    free: ClassVar[tuple[str, ...]] = ("r",)
    dependent: ClassVar[tuple[str, ...]] = ("r_high", "r_msb")
    makes_masks: ClassVar[bool] = True
    mask_component: ClassVar[str] = "r"
    variants: ClassVar[int] = 2

    shape: Shape
    bits: int

    @property
    def mask_bits(self) -> int:
        """How far apart the mask's variants are: 2^(64 - bits) times an integer."""
        return self.bits

    def shapes(self):
        return {"r": self.shape, "r_high": self.shape, "r_msb": self.shape}

    def dependent_values(self, free):
        r = free["r"]
        return {"r_high": logical_shift(r, self.bits), "r_msb": (r < 0).to(torch.int64)}

    def widths(self):
        return {"r_msb": self.bits}  # prepare reads it as r_msb << (64 - bits)

    def prepare(self, parts, party_id):
        """The mask (party 0 adds the offset 2^62 to it), and this party's share of the
        result's correction for c >= 0 (wrapped, as MSB(r) says) and for c < 0 (not
        wrapped): the online phase picks one per element. Party 0's include the offset's
        removal and, for c < 0, the difference between the logical shift of c and the
        arithmetic one it computes."""
        bits = self.bits
        # r_high and r_msb are this party's own fresh tensors (derived or received, or made by
        # dependent_values): worked on in place, a pass each instead of a pass and a buffer
        not_wrapped = parts["r_high"].neg_()
        if party_id == 0:
            not_wrapped.sub_(TRUNCATION_OFFSET >> bits)
        wrapped = parts["r_msb"].bitwise_left_shift_(64 - bits).add_(not_wrapped)
        if party_id == 0:  # party 0 adds c >> bits (arithmetic), 2^(64 - bits) short of the logical shift where c < 0
            not_wrapped.add_(1 << (64 - bits) if bits > 1 else -(1 << 63))
        return TruncationMaterial(parts["r"] + TRUNCATION_OFFSET if party_id == 0 else parts["r"], wrapped, not_wrapped)

    def output_masks(self, r: Tensor) -> Tensor:
        """The two values the output is masked by, stacked (not wrapped, wrapped), for the
        full mask r: the output y is (c >> bits) + mask[c >= 0]. The corrections are linear
        in the material, so both parties' prepared corrections add up to party 0's form on
        the full values."""
        prepared = self.prepare({"r": r, **self.dependent_values({"r": r})}, 0)
        return torch.stack([prepared.not_wrapped, prepared.wrapped])

    def mask_parts(self, full: Tensor, shape: Shape) -> MaskParts:
        not_wrapped, wrapped = self.output_masks(full).reshape(2, *shape)
        return MaskParts(not_wrapped, (wrapped - not_wrapped) >> (64 - self.bits), self.bits)


@dataclass(frozen=True)
class OpeningMaskMaterial:
    a: Tensor


@dataclass(frozen=True)
class OpeningMask(Spec[OpeningMaskMaterial]):
    """A fresh mask a for opening x - a ahead of products (ops.products.open_masked)."""

    kind: ClassVar[str] = "mask"
    linkable: ClassVar[frozenset[str]] = frozenset({"a"})
    Material: ClassVar[type] = OpeningMaskMaterial
    free: ClassVar[tuple[str, ...]] = ("a",)
    makes_masks: ClassVar[bool] = True
    mask_component: ClassVar[str] = "a"
    variants: ClassVar[int] = 1
    mask_bits: ClassVar[int] = 64

    shape: Shape

    def shapes(self):
        return {"a": self.shape}

    def mask_parts(self, full: Tensor, shape: Shape) -> MaskParts:
        return MaskParts(full.reshape(shape), None, 64)


MaskMaker = TruncationPair | OpeningMask


def _mask_link(ref: MaskRef) -> tuple[Request, str]:
    spec = ref.spec
    if not isinstance(spec, MaskMaker):
        raise ValueError(f"a masked product names a {ref.request.kind!r} request; only truncations and "
                         "openings make masks the dealer may multiply")
    return ref.request, spec.mask_component


def is_mask(request: Request, component: str) -> bool:
    """Whether a linked (request, component) is a mask maker's mask: the dealer hands those to
    `dependent_values` as the mask's MaskParts in its request's own shape (made once per mask:
    several products name one), any other linked component as its full value."""
    spec = request.spec
    return isinstance(spec, MaskMaker) and component == spec.mask_component


def own_mask_parts(request: Request, full: Tensor) -> MaskParts:
    """A mask maker's MaskParts, in its own shape, from the full mask."""
    return request.spec.mask_parts(full, request.spec.shape)


def _mask_parts(ref: MaskRef, parts: MaskParts) -> MaskParts:
    """The mask's parts in the shape `ref` views it in (parts: what the dealer links, see is_mask)."""
    return parts.reshaped(ref.shape)


@dataclass(frozen=True)
class MaskedProductMaterial:
    """The product of two masks (or of a mask and a bit) for each element's variants i, j in
    {0, 1}: X_i Y_j = base + i x_term + j y_term + i j cross, the terms shifted into place
    (None: absent, as for an operand of one mask). Made per element by `combine`, not
    expanded into every variant's product ahead: a pass per term, no gather."""

    base: Tensor
    x_term: Tensor | None = None
    y_term: Tensor | None = None
    cross: Tensor | None = None

    def combine(self, i: Tensor | None, j: Tensor | None) -> Tensor:
        """X_i Y_j per element for the variants i and j (bools broadcasting to the product's
        shape; None for one mask). Spends the material: its tensors are updated in place."""
        out = self.base
        for term, variant in ((self.x_term, i), (self.y_term, j)):
            if term is not None and variant is not None:
                out = out.add_(term.mul_(variant))
        if self.cross is not None and i is not None and j is not None:
            both = self.cross.mul_(i) if j is i else self.cross.mul_(i).mul_(j)  # a square's i j is i
            out = out.add_(both)
        return out


def _shifted(t: Tensor, exponent: int) -> Tensor | None:
    """t * 2^exponent in the ring, in place (t is the party's own fresh tensor); None for an absent term."""
    if not t.numel():
        return None
    return t.bitwise_left_shift_(exponent) if exponent < 64 else t.zero_()


@dataclass(frozen=True)
class MaskedProduct(Spec[MaskedProductMaterial]):
    """For x * y (elementwise, broadcasting) when each operand is already public up to a mask
    the dealer knows (x and y name their masks; a square names one twice).

    With variants X_i = N + i D 2^(64 - bx) and Y_j = L + j E 2^(64 - by) (`MaskParts`),
      X_i Y_j = N L + i (D L) 2^(64 - bx) + j (E N) 2^(64 - by) + i j (D E) 2^(128 - bx - by),
    so the dealer shares c = N L in full and cx = D L, cy = E N, cxy = D E only in their low
    bx, by and bx + by - 64 bits (cxy where that is positive; none of a one-variant mask).
    A square: c = N^2, cx = D N (times 2^(65 - bx)), cxy = D^2. `prepare` shifts them into
    place; the online phase combines them per element (MaskedProductMaterial.combine)."""

    kind: ClassVar[str] = "masked_product"
    Material: ClassVar[type] = MaskedProductMaterial
    dependent: ClassVar[tuple[str, ...]] = ("c", "cx", "cy", "cxy")

    x: MaskRef
    y: MaskRef

    @property
    def square(self) -> bool:
        return self.x == self.y

    def shapes(self):
        vx, vy = self.x.spec.variants, self.y.spec.variants
        out = broadcast(self.x.shape, self.y.shape)
        both = vx == vy == 2 and self.x.spec.mask_bits + self.y.spec.mask_bits > 64
        return {"c": out, "cx": out if vx == 2 else NONE, "cy": out if vy == 2 and not self.square else NONE,
                "cxy": out if both else NONE}

    def widths(self):
        bx, by = self.x.spec.mask_bits, self.y.spec.mask_bits
        return {"cx": bx, "cy": by, "cxy": max(bx + by - 64, 1)}

    def linked(self):
        return {"mx": _mask_link(self.x), "my": _mask_link(self.y)}

    def dependent_values(self, free):
        x, y = _mask_parts(self.x, free["mx"]), _mask_parts(self.y, free["my"])
        none = _absent()
        cross = (x.step * y.step) if self.shapes()["cxy"] != NONE else none  # type: ignore[operator]
        if self.square:
            return {"c": x.base * x.base, "cx": none if x.step is None else x.step * x.base, "cy": none, "cxy": cross}
        return {"c": x.base * y.base, "cx": none if x.step is None else x.step * y.base,
                "cy": none if y.step is None else y.step * x.base, "cxy": cross}

    def prepare(self, parts, party_id):
        bx, by = self.x.spec.mask_bits, self.y.spec.mask_bits
        c, cx, cy, cxy = (parts[name] for name in self.dependent)
        return MaskedProductMaterial(c, _shifted(cx, (65 if self.square else 64) - bx), _shifted(cy, 64 - by),
                                     _shifted(cxy, 128 - bx - by))


# ---- bits ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RandomBitsMaterial:
    packed: Tensor  # XOR shares, 64 bits to a word
    arith: Tensor  # the same bits as ring 0/1 shares


@dataclass(frozen=True)
class RandomBits(Spec[RandomBitsMaterial]):
    """Random bits, XOR-shared packed 64 to a word and additively shared as ring 0/1. The
    packed words are free; the additive copy is dependent."""

    kind: ClassVar[str] = "bits"
    linkable: ClassVar[frozenset[str]] = frozenset({"packed"})
    Material: ClassVar[type] = RandomBitsMaterial
    free: ClassVar[tuple[str, ...]] = ("packed",)
    dependent: ClassVar[tuple[str, ...]] = ("arith",)
    xor: ClassVar[frozenset[str]] = frozenset({"packed"})

    nbits: int

    def shapes(self):
        return {"packed": (bits_to_words(self.nbits),), "arith": (self.nbits,)}

    def dependent_values(self, free):
        return {"arith": unpack_bits(free["packed"], self.nbits)}


@dataclass(frozen=True)
class MaskedTimesBit(Spec[MaskedProductMaterial]):
    """For x * b, x masked (see MaskedProduct) and b a bit opened as b xor rho with rho from
    the `bits` request (a RandomBits one): the products of x's mask variants with rho (as
    ring 0/1), as c = N rho in full and cx = D rho in x's low bits
    (X_i rho = N rho + i (D rho) 2^(64 - bx)); `prepare` shifts cx into place."""

    kind: ClassVar[str] = "masked_times_bit"
    Material: ClassVar[type] = MaskedProductMaterial
    dependent: ClassVar[tuple[str, ...]] = ("c", "cx")

    x: MaskRef
    bits: Request

    def shapes(self):
        return {"c": self.x.shape, "cx": self.x.shape if self.x.spec.variants == 2 else NONE}

    def widths(self):
        return {"cx": self.x.spec.mask_bits}

    def linked(self):
        if not isinstance(self.bits.spec, RandomBits):
            raise ValueError(f"a bit product names a {self.bits.kind!r} request for its random bit, not 'bits'")
        return {"m": _mask_link(self.x), "rho": (self.bits, "packed")}

    def dependent_values(self, free):
        rho = unpack_bits(free["rho"], math.prod(self.x.shape)).reshape(self.x.shape)
        x = _mask_parts(self.x, free["m"])
        return {"c": x.base * rho, "cx": _absent() if x.step is None else x.step * rho}

    def prepare(self, parts, party_id):
        return MaskedProductMaterial(parts["c"], _shifted(parts["cx"], 64 - self.x.spec.mask_bits))


# ---- boolean ANDs ----------------------------------------------------------------------

@dataclass(frozen=True)
class AndMaterial:
    a: Tensor  # masks x (XOR shares of packed words)
    b: Tensor  # masks y
    c: Tensor  # a & b (for a private AND: a & b[index])


@dataclass(frozen=True)
class AndTriple(Spec[AndMaterial]):
    """Boolean Beaver triple on packed words: c = a & b, b broadcast against a (one
    operand's mask serves several ANDs, so that operand is opened once)."""

    kind: ClassVar[str] = "and"
    Material: ClassVar[type] = AndMaterial
    free: ClassVar[tuple[str, ...]] = ("a", "b")
    dependent: ClassVar[tuple[str, ...]] = ("c",)
    xor: ClassVar[frozenset[str]] = frozenset({"a", "b", "c"})

    shape_a: Shape
    shape_b: Shape

    def shapes(self):
        return {"a": self.shape_a, "b": self.shape_b, "c": broadcast(self.shape_a, self.shape_b)}

    def dependent_values(self, free):
        return {"c": free["a"] & free["b"]}


@dataclass(frozen=True)
class PrivateAndTriple(Spec[AndMaterial]):
    """For x & y with x known to party 0 alone and y to party 1 alone: a masks x and only
    party 0 knows it, b masks y and only party 1 knows it, c = a & b[index] is XOR-shared
    (row i of x meets row index[i] of y, so one row of y serves several of x). Each party
    then sends its masked operand once."""

    kind: ClassVar[str] = "private_and"
    linkable: ClassVar[frozenset[str]] = frozenset({"a", "b"})
    Material: ClassVar[type] = AndMaterial
    free: ClassVar[tuple[str, ...]] = ("a", "b")
    dependent: ClassVar[tuple[str, ...]] = ("c",)
    xor: ClassVar[frozenset[str]] = frozenset({"a", "b", "c"})
    private: ClassVar[dict[str, int]] = {"a": 0, "b": 1}

    shape_a: Shape
    shape_b: Shape
    index: tuple[int, ...]

    def shapes(self):
        return {"a": self.shape_a, "b": self.shape_b, "c": self.shape_a}

    def dependent_values(self, free):
        return {"c": free["a"] & free["b"][list(self.index)]}


@functools.lru_cache(maxsize=1024)
def product_subsets(terms: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Every set of two or more variables within some term, once each, sorted, in a fixed
    order (first appearance): the mask products a multi-input AND needs. Cached: the
    dealer and both parties ask for the same terms several times per request."""
    return tuple(dict.fromkeys(subset for term in terms for size in range(2, len(term) + 1)
                               for subset in itertools.combinations(sorted(term), size)))


def subset_products(a: Tensor, subsets: tuple[tuple[int, ...], ...]) -> Tensor:
    """The AND of a's rows over each subset, in order, written in place: each subset from its
    prefix (a subset of the same term, so one of `subsets`, met before it) and one AND."""
    out = a.new_empty((len(subsets), *a.shape[1:]))
    position: dict[tuple[int, ...], int] = {}
    for i, subset in enumerate(subsets):
        first = a[subset[0]] if len(subset) == 2 else out[position[subset[:-1]]]
        torch.bitwise_and(first, a[subset[-1]], out=out[i])
        position[subset] = i
    return out


@dataclass(frozen=True)
class OpenedRowMasks:
    """Rows of a multi-input AND's input already masked by a ^ b[index] of a private AND
    (ops.boolean.OpenedRows), block by block: for each (row, ids), ids[k] is the private
    AND's operand row that masks the row's k-th block of `block` words (-1: mask 0)."""

    source: Request  # the PrivateAndTriple request
    block: int
    rows: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class MultiAndMaterial:
    a: Tensor  # masks of the input rows (XOR shares)
    c: Tensor  # the masks' products over product_subsets(terms), one row each


@dataclass(frozen=True)
class MultiAndTriple(Spec[MultiAndMaterial]):
    """For ANDs of several bits each (ops.boolean.monomials): masks a for the k input rows
    (shape (k, ...)) and the XOR-shared products of the masks over every subset a term
    needs. Rows in `known` are masked already and their fresh masks go unused."""

    kind: ClassVar[str] = "multi_and"
    Material: ClassVar[type] = MultiAndMaterial
    free: ClassVar[tuple[str, ...]] = ("a",)
    dependent: ClassVar[tuple[str, ...]] = ("c",)
    xor: ClassVar[frozenset[str]] = frozenset({"a", "c"})

    shape: Shape
    terms: tuple[tuple[int, ...], ...]
    known: OpenedRowMasks | None = None

    def shapes(self):
        return {"a": self.shape, "c": (len(product_subsets(self.terms)), *self.shape[1:])}

    def linked(self):
        if self.known is None:
            return {}
        source = self.known.source
        if not isinstance(source.spec, PrivateAndTriple):
            raise ValueError(f"known rows of a multi-input AND name a {source.kind!r} request, not 'private_and'")
        return {"pa": (source, "a"), "pb": (source, "b")}

    def dependent_values(self, free):
        a = free["a"]
        if self.known is not None:
            known = self.known
            masks = free["pa"] ^ free["pb"][list(known.source.spec.index)]
            if masks.shape[1] != known.block:
                raise ValueError(f"known rows in blocks of {known.block} words, their private AND has "
                                 f"{masks.shape[1]}")
            masks = torch.cat([masks, masks.new_zeros(1, known.block)])  # id -1: the zero row
            a = a.clone()
            for row, ids in known.rows:
                a[row] = masks[list(ids)].reshape(-1)
        return {"c": subset_products(a, product_subsets(self.terms))}


# ---- comparisons -----------------------------------------------------------------------

@dataclass(frozen=True)
class MaskBitsMaterial:
    rows: Tensor  # (64, words): XOR shares of bit i of factor * M_0 in row i
    top: Tensor | None  # (bits, words): the top `bits` rows of factor * M_1 (None: one variant)


@dataclass(frozen=True)
class MaskBits(Spec[MaskBitsMaterial]):
    """The bits of a mask the dealer knows, times a factor, XOR-shared and bit-sliced (row i
    packs bit i of every element, 64 to a word), one set of rows per variant of the mask. For
    a comparison of x = p + factor M with p public (x a truncation's output: its Opening):
    the generate and propagate bits of p + factor M, p AND bits(factor M) and p XOR
    bits(factor M), are then local, and the private AND's round that makes them from two
    private shares is saved (ops.segments.threshold_bits). A truncation's two masks differ by
    a multiple of 2^(64 - bits), and so do their multiples: the second variant's low rows
    are the first's, and only its top `bits` rows are sent (80 rows for 16 bits, not 128)."""

    kind: ClassVar[str] = "mask_bits"
    Material: ClassVar[type] = MaskBitsMaterial
    dependent: ClassVar[tuple[str, ...]] = ("rows", "top")
    xor: ClassVar[frozenset[str]] = frozenset({"rows", "top"})

    mask: MaskRef
    factor: int

    def shapes(self):
        words = bits_to_words(math.prod(self.mask.shape))
        return {"rows": (64, words), "top": (self.mask.spec.mask_bits, words) if self.mask.spec.variants == 2 else NONE}

    def linked(self):
        return {"m": _mask_link(self.mask)}

    def dependent_values(self, free):
        parts = _mask_parts(self.mask, free["m"])
        base = parts.base.reshape(-1)
        rows = bit_slice(self._times_factor(base), 64)
        if parts.step is None:
            return {"rows": rows, "top": _absent()}
        other = self._times_factor(base + (parts.step.reshape(-1) << (64 - parts.bits)))
        return {"rows": rows, "top": bit_slice(other, 64)[64 - parts.bits:]}

    def _times_factor(self, mask: Tensor) -> Tensor:
        return mask if self.factor == 1 else mask * self.factor

    def prepare(self, parts, party_id):
        return MaskBitsMaterial(parts["rows"], parts["top"] if parts["top"].numel() else None)


@dataclass(frozen=True)
class SignKeyMaterial:
    r: Tensor  # masks x for its opening
    seed: Tensor  # this party's DCF root seeds (n, 2)
    msb_r: Tensor  # ring shares of MSB(r)
    s_cw: Tensor  # the DCF's public correction words (dcf.keygen)
    v_cw: Tensor
    t_cw: Tensor
    last: Tensor

    def correction_words(self) -> dict[str, Tensor]:
        """What dcf.evaluate reads besides the seed."""
        return {"s_cw": self.s_cw, "v_cw": self.v_cw, "t_cw": self.t_cw, "last": self.last}


@dataclass(frozen=True)
class SignKey(Spec[SignKeyMaterial]):
    """A DCF for the sign of x given the opened x + r, n elements (ops.compare).

    Free: the mask r (additive) and each party's DCF root seed. Dependent: MSB(r) as ring
    shares. Public: the DCF correction words for beta * [y < low63(r)] with beta = 1 - 2 MSB(r),
    so that MSB(r) + DCF(y) shares MSB(r) xor [y < low63(r)].
    """

    kind: ClassVar[str] = "sign_key"
    Material: ClassVar[type] = SignKeyMaterial
    free: ClassVar[tuple[str, ...]] = ("r", "seed")
    dependent: ClassVar[tuple[str, ...]] = ("msb_r",)
    public: ClassVar[tuple[str, ...]] = ("s_cw", "v_cw", "t_cw", "last")
    xor: ClassVar[frozenset[str]] = frozenset({"seed"})
    width: ClassVar[int] = 1

    n: int

    def shapes(self):
        n, levels = self.n, dcf.DOMAIN_BITS
        return {"r": (n,), "seed": (n, 2), **{name: (n,) for name in self.dependent},
                "s_cw": (levels, n, 2), "v_cw": (levels, n, self.width), "t_cw": (n, 2), "last": (n, self.width)}

    def dependent_values(self, free):
        return {"msb_r": (free["r"] < 0).long()}

    def payload(self, r: Tensor) -> Tensor:
        """beta (n, width) for the mask r."""
        return sign_payload(r)

    def public_values(self, free0, free1):
        return sign_key_words(free0["r"] + free1["r"], self.payload, free0["seed"], free1["seed"])


def sign_payload(r: Tensor) -> Tensor:
    """beta = 1 - 2 MSB(r), (n, 1): MSB(r) + beta [y < low63(r)] shares MSB(r) xor [y < low63(r)]."""
    return (1 - 2 * (r < 0).long())[:, None]


def sign_key_words(r: Tensor, payload: Callable[[Tensor], Tensor], seed0: Tensor, seed1: Tensor) -> dict[str, Tensor]:
    """The public correction words of the DCFs beta [y < low63(r)] for the masks r, beta =
    payload(r) (sign_payload, or SignTimesMaskKey's)."""
    return dcf.keygen(r & ((1 << 63) - 1), payload(r), seed0, seed1)


@dataclass(frozen=True)
class SignTimesMaskMaterial(SignKeyMaterial):
    msb_r_r: Tensor  # ring shares of MSB(r) * r


@dataclass(frozen=True)
class SignTimesMaskKey(SignKey):
    """A DCF giving, with the sign of x, the sign times the mask r (ReLU in the opening's
    round: ops.compare.relu_dcf). beta = (1 - 2 MSB(r)) * (1, r); dependent MSB(r) and
    MSB(r) * r as ring shares."""

    kind: ClassVar[str] = "sign_times_mask_key"
    Material: ClassVar[type] = SignTimesMaskMaterial
    dependent: ClassVar[tuple[str, ...]] = ("msb_r", "msb_r_r")
    width: ClassVar[int] = 2

    def dependent_values(self, free):
        msb = (free["r"] < 0).long()
        return {"msb_r": msb, "msb_r_r": msb * free["r"]}

    def payload(self, r):
        return super().payload(r) * torch.stack([torch.ones_like(r), r], dim=1)


@dataclass(frozen=True)
class MaskedSignKeyMaterial:
    seed: Tensor  # this party's DCF root seeds (rows, 2): row v n + i is element i's key for variant v
    msb_r: Tensor  # ring shares of MSB(r), per row
    s_cw: Tensor  # the DCF's public correction words (dcf.keygen), per row
    v_cw: Tensor
    t_cw: Tensor
    last: Tensor

    def for_elements(self, variant: Tensor | None, n: int) -> SignKeyMaterial:
        """Each element's key, for the variant its mask has (public once x's truncation
        opened), as a SignKey's material without its mask."""
        rows = torch.arange(n) if variant is None else torch.arange(n) + variant.reshape(-1).long() * n
        return SignKeyMaterial(_absent(), self.seed[rows], self.msb_r[rows], self.s_cw[:, rows], self.v_cw[:, rows],
                               self.t_cw[rows], self.last[rows])


@dataclass(frozen=True)
class MaskedSignKey(Spec[MaskedSignKeyMaterial]):
    """A DCF for the sign of x = p + u M, with p public and M a mask the dealer knows (x's
    Opening: a truncation's output, or an opening made ahead): the key's offset is
    r = -u M, so x + r = p is public already and nothing is opened (ops.compare). A
    truncation's mask has two variants, one public per element once it opened: a key for
    each, element i's for variant v at row v n + i.

    Free: each party's DCF root seeds. Dependent: MSB(r) as ring shares. Public: the
    correction words, as SignKey's, for beta = 1 - 2 MSB(r)."""

    kind: ClassVar[str] = "masked_sign_key"
    Material: ClassVar[type] = MaskedSignKeyMaterial
    free: ClassVar[tuple[str, ...]] = ("seed",)
    dependent: ClassVar[tuple[str, ...]] = ("msb_r",)
    public: ClassVar[tuple[str, ...]] = ("s_cw", "v_cw", "t_cw", "last")
    xor: ClassVar[frozenset[str]] = frozenset({"seed"})

    mask: MaskRef
    factor: int  # u

    @property
    def rows(self) -> int:
        return self.mask.spec.variants * math.prod(self.mask.shape)

    def shapes(self):
        rows, levels = self.rows, dcf.DOMAIN_BITS
        return {"seed": (rows, 2), "msb_r": (rows,), "s_cw": (levels, rows, 2), "v_cw": (levels, rows, 1),
                "t_cw": (rows, 2), "last": (rows, 1)}

    def linked(self):
        return {"mask": _mask_link(self.mask)}

    def offsets(self, parts: MaskParts) -> Tensor:
        """r = -u M for each row: each variant of the mask, variant-major."""
        viewed = _mask_parts(self.mask, parts)
        base = viewed.base.reshape(-1)
        masks = [base] if viewed.step is None else [base, base + times_power(viewed.step.reshape(-1), 64 - viewed.bits)]
        return torch.cat(masks).neg_() * self.factor

    def dependent_values(self, free):
        return {"msb_r": (self.offsets(free["mask"]) < 0).long()}

    def public_values(self, free0, free1):
        return sign_key_words(self.offsets(free0["mask"]), sign_payload, free0["seed"], free1["seed"])


# ---- lookup of a piecewise polynomial's coefficients ----------------------------------

@dataclass(frozen=True)
class PieceTableMaterial:
    delta: Tensor  # XOR shares of the index's mask, (bits, words)
    table: Tensor  # (3, n * rows): A, B and C of the mask's first variant, each element's rows u
    steps: Tensor | None  # (2, n * rows): what the second variant adds to A and B, in place (None: one variant)
    cross: Tensor | None  # (n * rows): ... and to A by the steps' square, in place (None: nothing)

    def pick(self, u: Tensor, variant: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(A, B, C) at each element's opened index u (flat, n elements) for its mask's
        variant (bools; None: the first): three gathers, and two more for the second variant."""
        n = u.numel()
        rows = self.table.shape[1] // n
        at = torch.arange(0, n * rows, rows).add_(u.reshape(-1))
        a, b, c = torch.index_select(self.table, 1, at)
        if self.steps is None or variant is None:
            return a, b, c
        second = variant.reshape(-1).to(torch.int64)
        da, db = torch.index_select(self.steps, 1, at).mul_(second)  # fresh: worked on in place
        if self.cross is not None:
            da.addcmul_(self.cross[at], second)
        return a.add_(da), b.add_(db), c


@dataclass(frozen=True)
class PieceTable(Spec[PieceTableMaterial]):
    """For a polynomial of degree <= 2 picked per element by a secret segment index, at a
    masked point x = p + factor M (see ops.piecewise): the index, XOR-shared in `bits` rows
    of packed bits, is opened as u = index xor delta for a random delta per element (u is
    uniform whatever the index), and the dealer shares, for every u, what the polynomial of
    segment u xor delta needs besides p: A = c0 + c1 phi M + c2 (phi M)^2, B = c1 + 2 c2 phi M
    and C = c2 (phi: the factor), so that c0 + c1 x + c2 x^2 = A + B p + C p^2 is local.
    coefficients: (c0s, c1s, c2s), ring integers per segment; segments past the lists have
    zero coefficients.

    `table` holds (A, B, C) for M's first variant N. A truncation's second variant
    N + D 2^(64 - b) (`MaskParts`) changes A by (c1 phi D + 2 c2 phi^2 N D) 2^(64 - b)
    + c2 phi^2 D^2 2^(128 - 2b) and B by 2 c2 phi D 2^(64 - b), C not at all: `steps` holds
    those two in their low b bits, `cross` the last in its low 2b - 64 (where positive).
    `prepare` shifts them into place; the online phase adds them only to the rows it picks
    (PieceTableMaterial.pick), so no table per variant is ever written."""

    kind: ClassVar[str] = "piece_table"
    Material: ClassVar[type] = PieceTableMaterial
    free: ClassVar[tuple[str, ...]] = ("delta",)
    dependent: ClassVar[tuple[str, ...]] = ("table", "steps", "cross")
    xor: ClassVar[frozenset[str]] = frozenset({"delta"})

    n: int
    bits: int
    coefficients: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    factor: int
    x: MaskRef

    def shapes(self):
        n, rows, two = self.n, 1 << self.bits, self.x.spec.variants == 2
        return {"delta": (self.bits, bits_to_words(n)), "table": (n, rows, 3),
                "steps": (n, rows, 2) if two else NONE,
                "cross": (n, rows) if two and 2 * self.x.spec.mask_bits > 64 else NONE}

    def widths(self):
        b = self.x.spec.mask_bits
        return {"steps": b, "cross": max(2 * b - 64, 1)}

    def linked(self):
        return {"m": _mask_link(self.x)}

    def dependent_values(self, free):
        n, rows, phi = self.n, 1 << self.bits, self.factor
        padded = torch.zeros((rows, 3), dtype=torch.int64)
        padded[:len(self.coefficients[0])] = torch.tensor(self.coefficients, dtype=torch.int64).t()
        # (c0, c1, c2) of segment u xor delta for every u, for each of the 2^bits deltas: one
        # gather by each element's delta then fills its table (n, rows, 3)
        by_delta = padded[torch.arange(rows).unsqueeze(1) ^ torch.arange(rows)]
        table = by_delta[unpack_index(free["delta"], n)]
        c0, c1, c2 = table.unbind(-1)
        mask = _mask_parts(self.x, free["m"])
        m = mask.base.reshape(n, 1) * phi
        a = c2 * m
        b = torch.add(c1, a, alpha=2)  # B = c1 + 2 c2 m
        a.add_(c1).mul_(m).add_(c0)  # A = c0 + m (c1 + c2 m)
        none = _absent()
        steps = cross = none
        if mask.step is not None:
            d = mask.step.reshape(n, 1) * phi
            steps = torch.stack([b * d, c2 * d * 2], -1)
            if self.shapes()["cross"] != NONE:
                cross = c2 * d * d
        c0.copy_(a)  # the table's columns become (A, B, C) in place
        c1.copy_(b)
        return {"table": table, "steps": steps, "cross": cross}

    def prepare(self, parts, party_id):
        """The table as (3, n * rows), A, B and C each picked for all elements by one
        index_select, and the second variant's steps as (2, n * rows), shifted into place."""
        table = parts["table"].permute(2, 0, 1).reshape(3, -1)  # (3, n * rows)
        steps, cross = parts["steps"], parts["cross"]
        if not steps.numel():
            return PieceTableMaterial(parts["delta"], table, None, None)
        shift = 64 - self.x.spec.mask_bits
        return PieceTableMaterial(parts["delta"], table, times_power(steps, shift).permute(2, 0, 1).reshape(2, -1),
                                  times_power(cross, 2 * shift).reshape(-1) if cross.numel() else None)
