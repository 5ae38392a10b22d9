"""Fixed-key AES-128-ECB callable from numba-compiled code: OpenSSL's EVP interface in the
system's libcrypto, through ctypes.

The DCF's tree walk (mpcrt.dealer.dcf) encrypts two blocks per element and level. Called
from Python, each level is one `cryptography` call for every element at once, whose
buffers outgrow the cache; called from the compiled walk, it is one EVP call per small
chunk and level, the chunk's state staying in L1/L2. Where no libcrypto loads,
`available()` is False and the walk runs level by level from Python instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if lib is None or not hasattr(lib, "EVP_EncryptUpdate"):
        return None
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    lib.EVP_aes_128_ecb.restype = ctypes.c_void_p
    lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                       ctypes.c_void_p]
    lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_int]
    lib.EVP_EncryptUpdate.restype = ctypes.c_int
    return lib


_LIB = _load()
# EVP_EncryptUpdate(ctx, out, &out_len, in, in_len): what compiled code calls
encrypt_update = _LIB.EVP_EncryptUpdate if _LIB is not None else None


class Context:
    """An EVP context for AES-128-ECB under `key`, without padding (whole blocks only).
    One per thread of use: EVP contexts are not shared between threads."""

    def __init__(self, key: bytes) -> None:
        if _LIB is None:
            raise RuntimeError("no libcrypto to load: check ecb.available() first")
        self.handle = _LIB.EVP_CIPHER_CTX_new()
        if not self.handle:
            raise RuntimeError("libcrypto could not allocate a cipher context")
        if _LIB.EVP_EncryptInit_ex(self.handle, _LIB.EVP_aes_128_ecb(), None, key, None) != 1:
            _LIB.EVP_CIPHER_CTX_free(self.handle)
            raise RuntimeError("libcrypto refused an AES-128-ECB context")
        _LIB.EVP_CIPHER_CTX_set_padding(self.handle, 0)

    def __enter__(self) -> int:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        _LIB.EVP_CIPHER_CTX_free(self.handle)


def available() -> bool:
    return _LIB is not None
