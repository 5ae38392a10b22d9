"""Fixed-key AES-128 inside numba-compiled code, by the CPU's AES instructions (AES-NI).

The DCF's walk (mpcrt.dealer.dcf) takes two AES blocks per element and level. Handed to a
library, each level's blocks make a round trip through memory and a call; here the rounds
run on values the compiled walk holds in registers, four elements' blocks interleaved so
that the AES unit stays busy: the walk takes about 20% less time at a payload of two ring
elements. `mmo` is an LLVM intrinsic (llvm.x86.aesni.aesenc), so it compiles only where
the host CPU has AES-NI: check `available()` first.
"""

from __future__ import annotations

import functools
import platform

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_BLOCK = ir.VectorType(ir.IntType(64), 2)
_ROUNDS = 10


@functools.cache
def available() -> bool:
    """Whether this CPU runs AES-NI (what `mmo` compiles to): an x86-64 one with the "aes"
    feature (ARM's AES instructions carry the same feature name, not the same intrinsic)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return bool(llvm.get_host_cpu_features().get("aes"))
    except RuntimeError:  # hosts whose features LLVM cannot read
        return False


def _rotl8(v: int, k: int) -> int:
    return ((v << k) | (v >> (8 - k))) & 0xFF


def _sbox() -> list[int]:
    """AES's S-box (FIPS-197 5.1.1): the inverse in GF(2^8), then the affine map. p walks
    the field's non-zero elements by multiplying by 3 while q divides by 3, so q = 1/p."""
    box = [0x63] * 256  # 0 has no inverse: the affine map of 0
    p = q = 1
    while True:
        p ^= ((p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        box[p] = q ^ _rotl8(q, 1) ^ _rotl8(q, 2) ^ _rotl8(q, 3) ^ _rotl8(q, 4) ^ 0x63
        if p == 1:
            return box


def round_keys(key: bytes) -> np.ndarray:
    """The 11 round keys of AES-128 under `key` (FIPS-197 5.2), as 22 uint64 in the byte
    order the AES instructions take them."""
    if len(key) != 16:
        raise ValueError(f"AES-128 takes a 16-byte key, not {len(key)} bytes")
    box, rcon = _sbox(), [1, 2, 4, 8, 16, 32, 64, 128, 27, 54]
    words = [list(key[4 * i:4 * i + 4]) for i in range(4)]
    for i in range(4, 4 * (_ROUNDS + 1)):
        w = list(words[i - 1])
        if i % 4 == 0:
            w = [box[b] for b in w[1:] + w[:1]]
            w[0] ^= rcon[i // 4 - 1]
        words.append([a ^ b for a, b in zip(words[i - 4], w, strict=True)])
    return np.frombuffer(bytes(b for w in words for b in w), dtype=np.uint64).copy()


def _as_block(builder: ir.IRBuilder, lo: ir.Value, hi: ir.Value) -> ir.Value:
    block = ir.Constant(_BLOCK, None)
    block = builder.insert_element(block, lo, ir.Constant(ir.IntType(32), 0))
    return builder.insert_element(block, hi, ir.Constant(ir.IntType(32), 1))


@intrinsic
def mmo(typingctx, lo, hi, keys):  # pragma: no cover - compiled
    """AES_k(x) xor x for the block x = (lo, hi) (Matyas-Meyer-Oseas: a correlation-robust
    hash from a fixed-key cipher), k's round keys from `round_keys`; returns (lo, hi)."""
    signature = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64, keys)

    def codegen(context, builder, sig, args):
        x = _as_block(builder, args[0], args[1])
        data = context.make_array(sig.args[2])(context, builder, value=args[2]).data
        schedule = builder.bitcast(data, _BLOCK.as_pointer())

        def key(r: int) -> ir.Value:
            return builder.load(builder.gep(schedule, [ir.Constant(ir.IntType(64), r)]), align=8)

        step = ir.FunctionType(_BLOCK, [_BLOCK, _BLOCK])
        enc = cgutils.get_or_insert_function(builder.module, step, "llvm.x86.aesni.aesenc")
        last = cgutils.get_or_insert_function(builder.module, step, "llvm.x86.aesni.aesenclast")
        state = builder.xor(x, key(0))
        for r in range(1, _ROUNDS):
            state = builder.call(enc, [state, key(r)])
        out = builder.xor(builder.call(last, [state, key(_ROUNDS)]), x)
        parts = [builder.extract_element(out, ir.Constant(ir.IntType(32), i)) for i in (0, 1)]
        return context.make_tuple(builder, sig.return_type, parts)

    return signature, codegen
