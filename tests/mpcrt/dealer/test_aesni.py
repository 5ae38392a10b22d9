"""AES-128 by the CPU's instructions inside compiled code: the same cipher as `cryptography`'s."""

import os

import numba
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpcrt.dealer import aesni

pytestmark = pytest.mark.skipif(not aesni.available(), reason="no AES-NI on this CPU (the DCF walks by level)")


@numba.njit
def _mmo_all(blocks, keys):
    out = np.empty_like(blocks)
    for i in range(blocks.shape[0] // 2):
        out[2 * i], out[2 * i + 1] = aesni.mmo(blocks[2 * i], blocks[2 * i + 1], keys)
    return out


def test_blocks_match_cryptography_and_the_fips_vector():
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # FIPS-197 appendix C.1
    plain = bytes.fromhex("00112233445566778899aabbccddeeff") + os.urandom(16 * 99)
    blocks = np.frombuffer(plain, dtype=np.uint64).copy()
    cipher = (_mmo_all(blocks, aesni.round_keys(key)) ^ blocks).tobytes()  # undo MMO's xor
    assert cipher[:16].hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert cipher == Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(plain)


def test_round_keys_follow_the_key():
    key = os.urandom(16)
    blocks = np.frombuffer(os.urandom(16 * 8), dtype=np.uint64).copy()
    want = np.frombuffer(Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(blocks.tobytes()), np.uint64)
    assert np.array_equal(_mmo_all(blocks, aesni.round_keys(key)) ^ blocks, want)
    with pytest.raises(ValueError, match="16-byte"):
        aesni.round_keys(key[:8])


def test_only_x86_64_counts(monkeypatch):
    """ARM's AES instructions carry the same LLVM feature name, but not the x86 intrinsic."""
    monkeypatch.setattr(aesni.platform, "machine", lambda: "aarch64")
    aesni.available.cache_clear()
    try:
        assert not aesni.available()
    finally:
        aesni.available.cache_clear()
