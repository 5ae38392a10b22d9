"""Cryptographically secure pseudo-random ring elements (AES-128-CTR from `cryptography`).

Never numpy's generator: masks and shares must be unpredictable to the other party.
A stream is named by a label under a key: its AES key is a keyed BLAKE2b of the label
(`stream_key`, 128 bits), so two holders of the key derive the same elements without
talking, any two labels get independent streams, and even a holder of the key needs about
2^64 work to find two labels with one stream. A label must name everything the stream's
value depends on (see mpcrt.dealer.material.Request.label): no pad may ever hide two values.
A fresh key from os.urandom gives private randomness.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
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


def stream_key(key: bytes, label: bytes) -> bytes:
    """The AES key of the stream named `label` under `key` (a PRF of the label: 128 bits)."""
    return hashlib.blake2b(label, key=key, digest_size=KEY_BYTES).digest()


ZERO_BLOCK = bytes(16)  # each stream has its own key, so its counter starts at zero


_ZEROS = memoryview(bytes(1 << 20))  # what CTR encrypts: its output is then the keystream itself
BLOCK = 16  # bytes of one AES block: a stream's positions count in blocks
_SLACK = 16  # bytes past the end: update_into wants room for a block less one byte more


def keystream(key: bytes, nbytes: int, first_block: int = 0) -> np.ndarray:
    """Bytes [16 first_block, 16 first_block + nbytes) of the AES-CTR keystream under `key`
    (the counter starts at first_block), written straight into fresh memory: no zeroed input
    or copy per call (the dealer makes thousands)."""
    out = np.empty(nbytes + _SLACK, dtype=np.uint8)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(first_block.to_bytes(BLOCK, "big"))).encryptor()
    chunk = len(_ZEROS)
    if nbytes <= chunk:
        encryptor.update_into(_ZEROS[:nbytes], out)
    else:
        for start in range(0, nbytes, chunk):
            size = min(chunk, nbytes - start)
            encryptor.update_into(_ZEROS[:size], out[start:start + size + _SLACK])
    return out[:nbytes]


def random_ring(shape: tuple[int, ...] | torch.Size, key: bytes, nonce: bytes = ZERO_BLOCK,
                dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Uniform elements of Z_2^64 (as int64) from the keyed stream (counter from `nonce`). A
    narrower integer dtype gives uniform elements of that width (fewer bytes of stream)."""
    n = math.prod(shape)
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    width = _WIDTHS[dtype]
    stream = keystream(key, width.itemsize * n, int.from_bytes(nonce, "big"))
    return torch.from_numpy(stream.view(width).reshape(shape))


_WIDTHS = {torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32), torch.int16: np.dtype(np.int16),
           torch.int8: np.dtype(np.int8)}


def named_ring(shape: tuple[int, ...] | torch.Size, key: bytes, label: bytes,
               dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Uniform ring elements (or integers of a narrower dtype) of the stream named `label` under `key`."""
    return random_ring(shape, stream_key(key, label), dtype=dtype)


def private_random_ring(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform ring elements only this process knows (fresh os.urandom key)."""
    return random_ring(shape, new_key())
