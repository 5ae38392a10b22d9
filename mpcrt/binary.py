"""XOR-shared bits: x = x0 xor x1, in int64 words (64 bits each).

Words either hold the 64 bits of ring elements (bit decompositions) or 64 independent
bits packed together (see dealer.material.pack_bits); protocols say which.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from mpcrt.scope import op_label
from mpcrt.shares import public_share

if TYPE_CHECKING:
    from mpcrt.runtime import Party


class BinaryShare:
    """This party's XOR share of a tensor of 64-bit words."""

    __slots__ = ("party", "value")

    def __init__(self, party: Party, value: torch.Tensor) -> None:
        if value.dtype != torch.int64:
            raise TypeError(f"binary shares are int64 words, got {value.dtype}")
        self.party = party
        self.value = value

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def __repr__(self) -> str:
        return f"BinaryShare(party={self.party.id}, shape={tuple(self.shape)})"

    def derived(self, value: torch.Tensor) -> BinaryShare:
        """This party's XOR share of words it computed locally from this share."""
        return BinaryShare(self.party, value)

    def __getitem__(self, index: Any) -> BinaryShare:
        return self.derived(self.value[index])

    def __xor__(self, other: Any) -> BinaryShare:
        """XOR with a share (local) or a public value (party 0 applies it)."""
        if isinstance(other, BinaryShare):
            return self.derived(self.value ^ other.value)
        public = torch.as_tensor(other, dtype=torch.int64)
        return self.derived(self.value ^ public_share(self.party.id, public))

    __rxor__ = __xor__

    def __invert__(self) -> BinaryShare:
        """NOT: party 0 flips every bit."""
        return self.derived(~self.value if self.party.id == 0 else self.value.clone())

    def __and__(self, public: Any) -> BinaryShare:
        """AND with public bits is local; two shares need `await mpcrt.ops.and_(x, y)`."""
        if isinstance(public, BinaryShare):
            raise TypeError("AND of two shares is interactive: use `await mpcrt.ops.and_(x, y)`")
        return self.derived(self.value & torch.as_tensor(public, dtype=torch.int64))

    def __lshift__(self, n: int) -> BinaryShare:
        return self.derived(self.value << n)

    def __rshift__(self, n: int) -> BinaryShare:
        """Logical right shift of each word."""
        return self.derived((self.value >> n) & ((1 << (64 - n)) - 1) if n else self.value)

    async def reveal(self) -> torch.Tensor:
        """Open the words to both parties (one round, 8 bytes per word each way)."""
        with op_label("reveal"):
            (peer,) = await self.party.exchange([self.value])
        return self.value ^ peer


class PackedBits(BinaryShare):
    """XOR-shared bits, one per element of a tensor of shape `bit_shape` (flattened order),
    packed 64 to a word: what comparisons return. The words stay internal (`value`, for
    protocols); `reveal` gives the bits as bools in that shape, as torch's `x < 0` does."""

    __slots__ = ("bit_shape",)

    def __init__(self, party: Party, value: torch.Tensor, bit_shape: tuple[int, ...]) -> None:
        super().__init__(party, value)
        self.bit_shape = tuple(bit_shape)

    def __repr__(self) -> str:
        return f"PackedBits(party={self.party.id}, bit_shape={self.bit_shape})"

    async def reveal(self) -> torch.Tensor:
        """The bits, to both parties (one round, a bit per element each way, in words)."""
        from mpcrt.dealer.packing import unpack_bool

        words = await super().reveal()
        return unpack_bool(words, math.prod(self.bit_shape)).reshape(self.bit_shape)
