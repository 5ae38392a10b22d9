"""libcrypto's AES-ECB from compiled code: the same cipher as `cryptography`'s."""

import os

import numba
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpcrt.dealer import ecb

pytestmark = pytest.mark.skipif(not ecb.available(), reason="no libcrypto on this machine (the DCF walks by level)")


@numba.njit
def _encrypt(ctx, inp, out, out_len):
    ecb.encrypt_update(ctx, out.ctypes.data, out_len.ctypes.data, inp.ctypes.data, inp.size * 8)
    return out_len[0]


def test_blocks_match_cryptography_and_the_fips_vector():
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # FIPS-197 appendix C.1
    plain = bytes.fromhex("00112233445566778899aabbccddeeff") + os.urandom(16 * 99)
    inp = np.frombuffer(plain, dtype=np.uint64).copy()
    out, out_len = np.empty(inp.size + 2, dtype=np.uint64), np.zeros(1, dtype=np.int32)
    with ecb.Context(key) as ctx:
        assert _encrypt(ctx, inp, out, out_len) == len(plain)
    got = out[:inp.size].tobytes()
    assert got[:16].hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert got == Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(plain)
