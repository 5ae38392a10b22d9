"""Bits packed 64 to an int64 word (bit j of word i is element 64 i + j), and back."""

from __future__ import annotations

import numpy as np
import torch


def bits_to_words(nbits: int) -> int:
    return (nbits + 63) // 64


def unpack_bool(words: torch.Tensor, nbits: int) -> torch.Tensor:
    """Bits of int64 words, as bools, first nbits (numpy's unpackbits on the words'
    little-endian bytes: one pass, no int64 temporaries)."""
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
