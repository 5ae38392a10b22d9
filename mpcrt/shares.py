"""Additively shared tensors over Z_2^64: x = x0 + x1 (mod 2^64), party i holding x_i.

Local operations (no communication) are methods; interactive ones are awaited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mpcrt import ring
from mpcrt.scope import op_label

if TYPE_CHECKING:
    from mpcrt.runtime import Party


class ArithmeticShare:
    """This party's share of a secret tensor, with its fixed-point scale and the dtype it decodes to."""

    __slots__ = ("dtype", "frac_bits", "party", "value")

    def __init__(self, party: Party, value: torch.Tensor, frac_bits: int, dtype: torch.dtype) -> None:
        if value.dtype != torch.int64:
            raise TypeError(f"share values are int64 ring elements, got {value.dtype}")
        self.party = party
        self.value = value
        self.frac_bits = frac_bits
        self.dtype = dtype

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def __repr__(self) -> str:
        return (f"ArithmeticShare(party={self.party.id}, shape={tuple(self.shape)}, "
                f"frac_bits={self.frac_bits}, dtype={self.dtype})")

    def _like(self, value: torch.Tensor) -> ArithmeticShare:
        return ArithmeticShare(self.party, value, self.frac_bits, self.dtype)

    def _operand(self, other: Any) -> torch.Tensor:
        """Ring value to add: the other share, or (at party 0 only) an encoded public value."""
        if isinstance(other, ArithmeticShare):
            if other.party is not self.party:
                raise ValueError("cannot combine shares of different parties")
            if other.frac_bits != self.frac_bits:
                raise ValueError(f"fixed-point scales differ: 2^-{self.frac_bits} and 2^-{other.frac_bits}")
            return other.value
        encoded = ring.encode(torch.as_tensor(other), self.frac_bits)
        return encoded if self.party.id == 0 else torch.zeros_like(encoded)

    def __add__(self, other: Any) -> ArithmeticShare:
        return self._like(self.value + self._operand(other))

    __radd__ = __add__

    def __sub__(self, other: Any) -> ArithmeticShare:
        return self._like(self.value - self._operand(other))

    def __rsub__(self, other: Any) -> ArithmeticShare:
        return self._like(self._operand(other) - self.value)

    def __neg__(self) -> ArithmeticShare:
        return self._like(-self.value)

    def __mul__(self, other: Any) -> ArithmeticShare:
        """Multiplication by a public integer (scalar or integer tensor); keeps the scale."""
        if isinstance(other, ArithmeticShare):
            raise TypeError("multiplying two shares is interactive (a Beaver product), not a local operation")
        factor = torch.as_tensor(other)
        if factor.is_floating_point() or factor.is_complex():
            raise TypeError("only integer public factors keep the fixed-point scale without truncation; "
                            f"got {factor.dtype}")
        return self._like(self.value * factor.to(torch.int64))

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
