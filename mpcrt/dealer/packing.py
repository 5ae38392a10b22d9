"""Bits packed 64 to an int64 word (bit j of word i is element 64 i + j), and back; values
bit-sliced into such rows (row i packs bit i of every element)."""

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


def _signed(mask: int) -> int:
    return mask - (1 << 64) if mask >= 1 << 63 else mask


# (shift, mask of the bits that move) for the six levels of a 64x64 bit-matrix transpose
_LEVELS = [(j, _signed(m)) for j, m in ((32, 0x00000000FFFFFFFF), (16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                                        (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333), (1, 0x5555555555555555))]


def transpose64(blocks: torch.Tensor) -> torch.Tensor:
    """Transpose each 64x64 bit matrix: out[w, i] bit j = blocks[w, j] bit i (Hacker's Delight
    7-3, vectorized over blocks: 6 levels of masked swaps instead of 64 packing passes)."""
    a = blocks.clone()
    for j, m in _LEVELS:
        pairs = a.view(len(a), 64 // (2 * j), 2, j)  # rows k (bit j of k clear) and k + j
        x, y = pairs[:, :, 0, :], pairs[:, :, 1, :]
        t = ((x >> j) ^ y) & m
        x ^= t << j
        y ^= t
    return a


def bit_slice(values: torch.Tensor, nbits: int) -> torch.Tensor:
    """(nbits, words): row i packs bit i of every element, 64 elements per word."""
    flat = values.reshape(-1)
    pad = -flat.numel() % 64
    blocks = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, 64)
    return transpose64(blocks)[:, :nbits].t().contiguous()
