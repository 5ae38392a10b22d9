"""Cryptographically secure pseudo-random ring elements (AES-128-CTR from `cryptography`).

Never numpy's generator: masks and shares must be unpredictable to the other party.
A keyed stream is deterministic per (key, nonce), so two holders of a key derive the same
elements without talking; a fresh key from os.urandom gives private randomness.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 16


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def derive_key(*parts: bytes) -> bytes:
    """A key from the concatenation of parts, domain-separated by their lengths."""
    h = hashlib.sha256(b"mpcrt-key")
    for p in parts:
        h.update(len(p).to_bytes(4, "little") + p)
    return h.digest()[:KEY_BYTES]


def nonce_for(label: bytes) -> bytes:
    """A 16-byte CTR start block: 8 bytes naming the stream, then a zero block counter."""
    return hashlib.blake2b(label, digest_size=8).digest() + bytes(8)


def random_bytes(n: int, key: bytes, nonce: bytes) -> bytearray:
    """n bytes of the AES-CTR keystream for (key, nonce)."""
    out = bytearray(n + 15)  # update_into needs room for one block more than its input
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    written = encryptor.update_into(bytes(n), out)
    del out[written:]
    return out


def random_ring(shape: tuple[int, ...] | torch.Size, key: bytes, nonce: bytes) -> torch.Tensor:
    """Uniform elements of Z_2^64 (as int64) from the keyed stream."""
    n = math.prod(shape)
    if n == 0:
        return torch.empty(shape, dtype=torch.int64)
    return torch.frombuffer(random_bytes(8 * n, key, nonce), dtype=torch.int64).reshape(shape)


def private_random_ring(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform ring elements only this process knows (fresh os.urandom key)."""
    return random_ring(shape, new_key(), bytes(16))
