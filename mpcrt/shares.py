"""Additively shared tensors over Z_2^64: x = x0 + x1 (mod 2^64), party i holding x_i.

Local operations (no communication) are methods; interactive ones are awaited.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from mpcrt import ring
from mpcrt.scope import op_label

if TYPE_CHECKING:
    from mpcrt.dealer.request import MaskRef
    from mpcrt.runtime import Party


def public_share(party_id: int, value: Any) -> Any:
    """This party's share of a public value: party 0 holds the value, party 1 zero (for
    additive shares and XOR shares alike). The one place the roles differ in sharing a
    constant; hot paths that would pay a pass over zeros at party 1 branch instead."""
    if party_id == 0:
        return value
    return torch.zeros_like(value) if isinstance(value, torch.Tensor) else 0


def plus_public(party_id: int, value: torch.Tensor, public: Any, alpha: int = 1,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """This party's share of x + alpha * public from its share `value` of x (public in ring
    units): party 0 adds, party 1 keeps its share (no pass over zeros). out: where party 0
    writes (`value` itself: in place)."""
    if party_id != 0:
        return value
    return torch.add(value, public, alpha=alpha, out=out)


def xor_public(party_id: int, value: torch.Tensor, public: Any) -> torch.Tensor:
    """This party's XOR share of x ^ public from its XOR share `value` of x: party 0 applies it."""
    return value ^ public if party_id == 0 else value


def ring_int(v: int) -> int:
    """A Python integer as the signed 64-bit ring element it stands for."""
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


@dataclass(frozen=True)
class Opening:
    """x opened under a mask the dealer knows: x = public + factor * M, with `public` known to
    both parties and M a value the dealer can rebuild (the mask of a truncation's opening,
    or of an opening made ahead). x is then as good as opened for a later elementwise
    product, which needs no opening of x. (One idea, one word: OpenedBit and OpenedRows are
    the same for bits.)

    source: the dealer request that made M, in x's shape (dealer.request.MaskRef); variant: which of
    a truncation's two masks each element has, as bools (None for a single mask)."""

    source: MaskRef
    variant: torch.Tensor | None
    public: torch.Tensor
    factor: int = 1

    def affine(self, factor: int, offset: torch.Tensor | int = 0) -> Opening:
        """The opening of factor * x + offset (offset public, in ring units)."""
        return replace(self, public=self.public * factor + offset, factor=ring_int(self.factor * factor))

    def reshape(self, shape: tuple[int, ...]) -> Opening:
        """The opening of x viewed in another shape (same element order)."""
        public = self.public.reshape(shape)
        return replace(self, source=self.source.reshaped(tuple(public.shape)), public=public,
                       variant=None if self.variant is None else self.variant.reshape(public.shape))


class ArithmeticShare:
    """This party's share of a secret tensor, with its fixed-point scale and the dtype it decodes to."""

    __slots__ = ("dtype", "frac_bits", "opening", "party", "value")

    def __init__(self, party: Party, value: torch.Tensor, frac_bits: int, dtype: torch.dtype,
                 opening: Opening | None = None) -> None:
        if value.dtype != torch.int64:
            raise TypeError(f"share values are int64 ring elements, got {value.dtype}")
        self.party = party
        self.value = value
        self.frac_bits = frac_bits
        self.dtype = dtype
        self.opening = opening  # set where the value is public up to a mask the dealer knows

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def __repr__(self) -> str:
        return (f"ArithmeticShare(party={self.party.id}, shape={tuple(self.shape)}, "
                f"frac_bits={self.frac_bits}, dtype={self.dtype})")

    def _like(self, value: torch.Tensor) -> ArithmeticShare:
        return ArithmeticShare(self.party, value, self.frac_bits, self.dtype)

    def derived(self, value: torch.Tensor, frac_bits: int) -> ArithmeticShare:
        """This party's share of a value it computed locally from this share (and others of
        its own), at scale frac_bits; not masked. An integer share that gains fractional
        bits decodes as float."""
        dtype = self.dtype if not frac_bits or self.dtype.is_floating_point else torch.get_default_dtype()
        return ArithmeticShare(self.party, value, frac_bits, dtype)

    @classmethod
    def integers(cls, party: Party, value: torch.Tensor) -> ArithmeticShare:
        """A share of integers (scale 0): bits and one-hot rows made arithmetic."""
        return cls(party, value, 0, torch.int64)

    def lift(self, bits: int) -> ArithmeticShare:
        """The same value with `bits` more fractional bits (exact, local)."""
        return self.derived(self.value << bits, self.frac_bits + bits)

    def plus_constant(self, constant: float) -> ArithmeticShare:
        """self + a public real rounded once at this share's scale, whatever the scale
        (protocols carry constants at extra precision, then truncate once; `+` encodes as
        inputs are, at most 30 bits). Local."""
        return self.derived(plus_public(self.party.id, self.value, ring.encode_constant(constant, self.frac_bits)),
                            self.frac_bits)

    def divided_exactly(self, bits: int) -> ArithmeticShare:
        """self / 2^bits, exact and local: the same ring values read at `bits` more fractional
        bits (a masked share stays masked); a product with it truncates them in its own
        truncation."""
        return ArithmeticShare(self.party, self.value, self.frac_bits + bits, self.dtype, self.opening)

    def times(self, constant: Any, bits: int) -> ArithmeticShare:
        """self * constant, a public real (or tensor of them, broadcasting) encoded at `bits`
        fractional bits, untruncated: the result carries frac_bits + bits (truncating it by
        `bits` gives the product at this scale). Local."""
        if isinstance(constant, (int, float)):
            return self.derived(self.value * ring.encode_constant(constant, bits), self.frac_bits + bits)
        return self.derived(self.value * ring.encode(torch.as_tensor(constant), bits), self.frac_bits + bits)

    @property
    def ndim(self) -> int:
        return self.value.ndim

    def numel(self) -> int:
        return self.value.numel()

    def __len__(self) -> int:
        return len(self.value)

    # ---- local reshaping: the same index map applied to each share ---------------------

    def _reshaped(self, value: torch.Tensor) -> ArithmeticShare:
        """A share of the same elements in another shape; its opening follows."""
        out = self._like(value)
        if self.opening is not None:
            out.opening = self.opening.reshape(tuple(value.shape))
        return out

    def reshape(self, *shape: Any) -> ArithmeticShare:
        return self._reshaped(self.value.reshape(*shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> ArithmeticShare:
        return self._reshaped(self.value.flatten(start_dim, end_dim))

    def __getitem__(self, index: Any) -> ArithmeticShare:
        return self._like(self.value[index])

    def transpose(self, dim0: int, dim1: int) -> ArithmeticShare:
        return self._like(self.value.transpose(dim0, dim1))

    def t(self) -> ArithmeticShare:
        return self._like(self.value.t())

    def permute(self, *dims: int) -> ArithmeticShare:
        return self._like(self.value.permute(*dims))

    def unsqueeze(self, dim: int) -> ArithmeticShare:
        return self._like(self.value.unsqueeze(dim))

    def squeeze(self, dim: int | None = None) -> ArithmeticShare:
        return self._like(self.value.squeeze() if dim is None else self.value.squeeze(dim))

    def expand(self, *shape: Any) -> ArithmeticShare:
        return self._like(self.value.expand(*shape))

    def sum(self, dim: Any = None, keepdim: bool = False) -> ArithmeticShare:
        """Sum over `dim` (all if None); exact in the ring. The mean is `mpcrt.ops.mean`."""
        return self._like(self.value.sum() if dim is None else self.value.sum(dim=dim, keepdim=keepdim))

    def pad(self, pad: Any, value: float = 0.0) -> ArithmeticShare:
        """torch.nn.functional.pad with a constant; party 0 carries the constant."""
        padded = torch.nn.functional.pad(self.value, pad, value=0)
        if value and self.party.id == 0:
            mask = torch.nn.functional.pad(torch.zeros_like(self.value, dtype=torch.bool), pad, value=True)
            padded = padded + mask.long() * ring.encode(torch.tensor(value), self.frac_bits)
        return self._like(padded)

    def _operand(self, other: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ring value this party adds, the public value's encoding or None for a share): the
        other share, or an encoded public value, which party 0 alone adds."""
        if isinstance(other, ArithmeticShare):
            if other.party is not self.party:
                raise ValueError("cannot combine shares of different parties")
            if other.frac_bits != self.frac_bits:
                raise ValueError(f"fixed-point scales differ: 2^-{self.frac_bits} and 2^-{other.frac_bits}")
            return other.value, None
        encoded = ring.encode(torch.as_tensor(other), self.frac_bits)
        return public_share(self.party.id, encoded), encoded

    def _affine(self, value: torch.Tensor, factor: int, public: torch.Tensor | None = None) -> ArithmeticShare:
        """factor * self + public (value computed by the caller), keeping the opening
        unless a share was added (public is None then, or for negation)."""
        out = self._like(value)
        if self.opening is not None:
            opening = self.opening.affine(factor, 0 if public is None else public)
            out.opening = opening if opening.public.shape == value.shape else None
        return out

    def __add__(self, other: Any) -> ArithmeticShare:
        added, public = self._operand(other)
        if public is None:
            return self._like(self.value + added)
        return self._affine(self.value + added, 1, public)

    __radd__ = __add__

    def __sub__(self, other: Any) -> ArithmeticShare:
        added, public = self._operand(other)
        if public is None:
            return self._like(self.value - added)
        return self._affine(self.value - added, 1, -public)

    def __rsub__(self, other: Any) -> ArithmeticShare:
        added, public = self._operand(other)
        if public is None:
            return self._like(added - self.value)
        return self._affine(added - self.value, -1, public)

    def __neg__(self) -> ArithmeticShare:
        return self._affine(-self.value, -1)

    def __mul__(self, other: Any) -> ArithmeticShare:
        """Multiplication by a public integer (scalar or integer tensor); keeps the scale."""
        if isinstance(other, ArithmeticShare):
            raise TypeError("multiplying two shares is interactive (a Beaver product), not a local operation")
        factor = torch.as_tensor(other)
        if factor.is_floating_point() or factor.is_complex():
            raise TypeError("only integer public factors keep the fixed-point scale without truncation; "
                            f"got {factor.dtype}")
        product = self.value * factor.to(torch.int64)
        return self._affine(product, int(factor), None) if factor.ndim == 0 else self._like(product)

    __rmul__ = __mul__

    async def reveal(self, to: int | None = None) -> torch.Tensor | None:
        """Open the secret: to both parties (to=None, one round), or only to party `to`."""
        party = self.party
        with op_label("reveal"):
            if to is None:
                (peer,) = await party.exchange([self.value])
            elif to == party.id:
                (peer,) = await party.exchange(None, expect=[("i8", tuple(self.shape))])
            elif to == party.peer_id:
                await party.exchange([self.value], receive=False)
                return None
            else:
                raise ValueError(f"reveal(to=...) takes 0, 1 or None, got {to!r}")
        return ring.decode(self.value + peer, self.frac_bits, self.dtype)


def _same_kind(shares: list[ArithmeticShare]) -> ArithmeticShare:
    first = shares[0]
    if any(s.party is not first.party or s.frac_bits != first.frac_bits for s in shares):
        raise ValueError("cannot join shares of different parties or fixed-point scales")
    return first


def cat(shares: list[ArithmeticShare], dim: int = 0) -> ArithmeticShare:
    """torch.cat of shares (local)."""
    return _same_kind(shares)._like(torch.cat([s.value for s in shares], dim=dim))


def stack(shares: list[ArithmeticShare], dim: int = 0) -> ArithmeticShare:
    """torch.stack of shares (local)."""
    return _same_kind(shares)._like(torch.stack([s.value for s in shares], dim=dim))
