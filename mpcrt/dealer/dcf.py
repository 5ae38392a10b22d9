"""Distributed comparison functions (function secret sharing), vectorized over elements.

A DCF key pair for (alpha, beta) lets two parties holding a public y compute additive
shares of beta * [y < alpha] with no interaction (Boyle, Gilboa, Ishai, CCS 2016; the
variant of Boyle et al., Eurocrypt 2021, Fig. 3). Keys walk a binary tree over the bits
of y, most significant first; at each level a PRG expands a 128-bit seed, and public
correction words keep the two parties' paths equal off alpha's path and correct on it.
beta is a vector of `width` ring elements (ReLU's payload is the bit and the bit times a
mask: both from one walk). One key per element.

PRG: fixed-key AES-128 in Matyas-Meyer-Oseas mode, block i of G(s) = AES_k(s xor i) xor
(s xor i), i in the low word: the left and right child seeds (i = 2, 3; the control bit t
is the seed's lowest bit, cleared from the seed), then the left and right payload blocks
of two ring elements (i = 4, 5: a width of 1 or 2); a leaf's value is block 8 of its
seed. Evaluation follows one path, so it expands only the child it takes: 2 AES blocks
per level and element.

Evaluation is compiled by numba, AES included where the CPU has AES-NI (`aesni`): per
chunk of elements that stays in cache, level by level, four elements at a time (their eight
AES blocks in flight together), then the leaves. Elsewhere the walk goes level by level
from Python, each level's blocks in one `cryptography` call and the same compiled
correction step (`_update`) in one pass (timings of both: docs/BENCHMARKS.md, "DCF
evaluation"). Key generation (the dealer's) is compiled too, both parties' keys in one
pass.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpcrt import prg
from mpcrt.dealer import aesni

DOMAIN_BITS = 63
_KEY = prg.derive_key(b"mpcrt-dcf-fixed-key")
_ROUND_KEYS = aesni.round_keys(_KEY)
_LEAF_TWEAK = 8
_NOT_ONE = np.uint64(0xFFFFFFFFFFFFFFFE)
WIDTHS = (1, 2)


class _Cipher:
    """Fixed-key AES-ECB into a reused output buffer."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.inp = np.empty(shape, dtype=np.uint64)
        self.buffer = bytearray(self.inp.nbytes + 16)
        self.out = np.frombuffer(self.buffer, dtype=np.uint64, count=self.inp.size).reshape(shape)
        self.encryptor = Cipher(algorithms.AES(_KEY), modes.ECB()).encryptor()
        self.flat_inp = self.inp.reshape(-1)

    def run(self) -> np.ndarray:
        """AES of every block of `inp` (MMO's xor with the input is left to the caller)."""
        self.encryptor.update_into(self.inp.data.cast("B"), self.buffer)
        return self.out


WALK_CHUNK = 1024  # elements per chunk of the compiled walk: their state stays in cache for all levels
KEYGEN_THREAD_ELEMENTS = 8192  # keys per thread at least: below, a thread costs more than it saves


def keygen_threads(n: int) -> int:
    """Threads for n keys: as many as torch may use in this process (its intra-op threads:
    the owner's cores, or one where the owner shares the machine with the servers, as
    `lpgan demo --threads` sets), each with at least KEYGEN_THREAD_ELEMENTS keys."""
    return max(1, min(torch.get_num_threads(), n // KEYGEN_THREAD_ELEMENTS))


@numba.njit(cache=True, nogil=True, inline="always")
def _child(lo, hi, bit, keys):  # pragma: no cover - compiled
    """A seed's blocks for its child `bit`: the child's seed (MMO tweak 2 + bit) and its
    payload (tweak 4 + bit), two words each."""
    a, b = aesni.mmo(lo ^ (np.uint64(2) + bit), hi, keys)
    c, d = aesni.mmo(lo ^ (np.uint64(4) + bit), hi, keys)
    return a, b, c, d


@numba.njit(cache=True, nogil=True, inline="always")
def _expand(i, shift, s, y, keys):  # pragma: no cover - compiled
    """Element i's path bit and its seed's blocks for that child."""
    bit = (y[i] >> shift) & np.uint64(1)
    a, b, c, d = _child(s[np.uint64(2) * i], s[np.uint64(2) * i + np.uint64(1)], bit, keys)
    return bit, a, b, c, d


@numba.njit(cache=True, nogil=True, inline="always")
def _update(width, i, bit, a, b, c, d, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at):  # pragma: no cover
    """The taken child's corrected control bit, value and seed (width: a constant where it
    is inlined, so its branch folds away)."""
    one, two = np.uint64(1), np.uint64(2)
    parent = t[i]
    mask = np.uint64(0) - parent
    t[i] = (a & one) ^ (parent & (t_cw[two * i + word] >> (t_shift + bit)))
    k, kk = np.uint64(width) * i, np.uint64(width) * (at + i)
    v[k] += c + (v_cw[kk] & mask)
    if width == 2:
        v[k + one] += d + (v_cw[kk + one] & mask)
    s[two * i] = (a ^ (s_cw[two * (at + i)] & mask)) & _NOT_ONE
    s[two * i + one] = b ^ (s_cw[two * (at + i) + one] & mask)


def _make_walk(width: int):
    """The whole evaluation for one payload width in one compiled function (AES by aesni),
    the width compiled in. Indices are unsigned: numba checks a signed one for wrap-around."""

    @numba.njit(cache=True, nogil=True)
    def walk(keys, s, y, s_cw, v_cw, t_cw, t, v, start, total):  # pragma: no cover - compiled
        """Adds each element's path values and leaf value into v (flat arrays; elements
        start.. of keys for `total`, whose per-element arrays s, y, t_cw, t, v are given
        for those elements only)."""
        one, two = np.uint64(1), np.uint64(2)
        n = y.shape[0]
        for lo in range(0, n, WALK_CHUNK):
            hi = min(n, lo + WALK_CHUNK)
            fours = lo + (hi - lo) // 4 * 4
            for level in range(DOMAIN_BITS):
                shift = np.uint64(DOMAIN_BITS - 1 - level)
                word, t_shift = np.uint64(level // 32), np.uint64(2 * (level % 32))
                at = np.uint64(level * total + start)
                for j in range(lo, fours, 4):
                    i0 = np.uint64(j)
                    i1, i2, i3 = i0 + one, i0 + two, i0 + np.uint64(3)
                    p0, a0, b0, c0, d0 = _expand(i0, shift, s, y, keys)
                    p1, a1, b1, c1, d1 = _expand(i1, shift, s, y, keys)
                    p2, a2, b2, c2, d2 = _expand(i2, shift, s, y, keys)
                    p3, a3, b3, c3, d3 = _expand(i3, shift, s, y, keys)
                    _update(width, i0, p0, a0, b0, c0, d0, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at)
                    _update(width, i1, p1, a1, b1, c1, d1, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at)
                    _update(width, i2, p2, a2, b2, c2, d2, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at)
                    _update(width, i3, p3, a3, b3, c3, d3, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at)
                for j in range(fours, hi):
                    i = np.uint64(j)
                    bit, a, b, c, d = _expand(i, shift, s, y, keys)
                    _update(width, i, bit, a, b, c, d, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at)
            for j in range(lo, hi):  # a leaf's value: block 8 of the final seed
                i = np.uint64(j)
                c, d = aesni.mmo(s[two * i] ^ np.uint64(_LEAF_TWEAK), s[two * i + one], keys)
                v[np.uint64(width) * i] += c
                if width == 2:
                    v[np.uint64(width) * i + one] += d

    return walk


_WALKS = {width: _make_walk(width) for width in WIDTHS}


@numba.njit(cache=True, nogil=True)
def _all_inputs(s, inp):  # pragma: no cover - compiled
    """inp[p, i, j] = s[p, i] xor (2 + j): both children's blocks, both parties (keygen)."""
    for p in range(2):
        for i in range(s.shape[1]):
            for j in range(4):
                inp[p, i, j, 0] = s[p, i, 0] ^ np.uint64(2 + j)
                inp[p, i, j, 1] = s[p, i, 1]


@numba.njit(cache=True, nogil=True)
def _key_step(inp, out, alpha, shift, beta, s, t, v_alpha, s_cw, v_cw, t_cw):  # pragma: no cover
    """One level of key generation (Eurocrypt 2021, Fig. 3), writing this level's
    correction words and moving both parties' seeds down alpha's path."""
    one = np.uint64(1)
    width = beta.shape[1]
    for i in range(alpha.shape[0]):
        a = (alpha[i] >> shift) & one
        keep = np.int64(a)
        lose = 1 - keep
        # the children's control bits and seeds (low word cleared of its bit), per party
        t0l = (out[0, i, 0, 0] ^ inp[0, i, 0, 0]) & one
        t0r = (out[0, i, 1, 0] ^ inp[0, i, 1, 0]) & one
        t1l = (out[1, i, 0, 0] ^ inp[1, i, 0, 0]) & one
        t1r = (out[1, i, 1, 0] ^ inp[1, i, 1, 0]) & one
        cw_lo = ((out[0, i, lose, 0] ^ inp[0, i, lose, 0]) ^ (out[1, i, lose, 0] ^ inp[1, i, lose, 0])) & _NOT_ONE
        cw_hi = (out[0, i, lose, 1] ^ inp[0, i, lose, 1]) ^ (out[1, i, lose, 1] ^ inp[1, i, lose, 1])
        s_cw[i, 0] = cw_lo
        s_cw[i, 1] = cw_hi
        negate = t[1, i] == 1
        for k in range(width):
            v_lose0 = out[0, i, 2 + lose, k] ^ inp[0, i, 2 + lose, k]
            v_lose1 = out[1, i, 2 + lose, k] ^ inp[1, i, 2 + lose, k]
            v_keep0 = out[0, i, 2 + keep, k] ^ inp[0, i, 2 + keep, k]
            v_keep1 = out[1, i, 2 + keep, k] ^ inp[1, i, 2 + keep, k]
            # y < alpha on every path that leaves alpha's path to the left (y bit 0, alpha bit 1)
            cw = v_lose1 - v_lose0 - v_alpha[i, k] + a * beta[i, k]
            if negate:
                cw = np.uint64(0) - cw
            v_cw[i, k] = cw
            v_alpha[i, k] = v_alpha[i, k] - v_keep1 + v_keep0 + (np.uint64(0) - cw if negate else cw)
        t_left = t0l ^ t1l ^ a ^ one
        t_right = t0r ^ t1r ^ a
        t_cw[i] = t_left | (t_right << one)
        t_keep = t_right if a == one else t_left
        for p in range(2):
            mask = np.uint64(0) - t[p, i]
            s[p, i, 0] = ((out[p, i, keep, 0] ^ inp[p, i, keep, 0]) & _NOT_ONE) ^ (cw_lo & mask)
            s[p, i, 1] = (out[p, i, keep, 1] ^ inp[p, i, keep, 1]) ^ (cw_hi & mask)
            t[p, i] = ((out[p, i, keep, 0] ^ inp[p, i, keep, 0]) & one) ^ (t[p, i] & t_keep)


def _make_keygen(width: int):
    """Key generation for elements lo..hi in one compiled function (AES by aesni), every level
    of an element while its state stays in registers: the same words as the level-by-level
    `_key_step` (Eurocrypt 2021, Fig. 3), without a pass over memory per level. nogil: the
    dealer runs element ranges in threads."""

    @numba.njit(cache=True, nogil=True)
    def keygen_range(keys, alpha, beta, s, t, v_alpha, s_cw, v_cw, t_cw, last, lo, hi):  # pragma: no cover
        one, zero = np.uint64(1), np.uint64(0)
        for j in range(lo, hi):
            for level in range(DOMAIN_BITS):
                a = (alpha[j] >> np.uint64(DOMAIN_BITS - 1 - level)) & one
                # keep alpha's child (seed words 0, 1; payload words 2, 3), lose the other
                keep0, lose0 = _child(s[0, j, 0], s[0, j, 1], a, keys), _child(s[0, j, 0], s[0, j, 1], a ^ one, keys)
                keep1, lose1 = _child(s[1, j, 0], s[1, j, 1], a, keys), _child(s[1, j, 0], s[1, j, 1], a ^ one, keys)
                cw_lo = (lose0[0] ^ lose1[0]) & _NOT_ONE
                cw_hi = lose0[1] ^ lose1[1]
                s_cw[level, j, 0] = cw_lo
                s_cw[level, j, 1] = cw_hi
                negate = t[1, j] == one
                for k in range(width):  # payload word k: tuple item 2 + k, chosen statically
                    v_lose = lose1[2] - lose0[2] if k == 0 else lose1[3] - lose0[3]
                    v_keep = keep1[2] - keep0[2] if k == 0 else keep1[3] - keep0[3]
                    # y < alpha on every path that leaves alpha's path to the left (y bit 0, alpha bit 1)
                    cw = v_lose - v_alpha[j, k] + a * beta[j, k]
                    if negate:
                        cw = zero - cw
                    v_cw[level, j, k] = cw
                    v_alpha[j, k] = v_alpha[j, k] - v_keep + (zero - cw if negate else cw)
                # control-bit corrections: left = tl0 ^ tl1 ^ a ^ 1, right = tr0 ^ tr1 ^ a; the kept one is
                # the kept seeds' bits ^ 1 either way
                t_keep = (keep0[0] ^ keep1[0] ^ one) & one
                t_lose = (lose0[0] ^ lose1[0]) & one
                t_left, t_right = (t_lose, t_keep) if a == one else (t_keep, t_lose)
                t_cw[j, level // 32] |= (t_left | (t_right << one)) << np.uint64(2 * (level % 32))
                mask0, mask1 = zero - t[0, j], zero - t[1, j]
                s[0, j, 0] = (keep0[0] & _NOT_ONE) ^ (cw_lo & mask0)
                s[0, j, 1] = keep0[1] ^ (cw_hi & mask0)
                t[0, j] = (keep0[0] & one) ^ (t[0, j] & t_keep)
                s[1, j, 0] = (keep1[0] & _NOT_ONE) ^ (cw_lo & mask1)
                s[1, j, 1] = keep1[1] ^ (cw_hi & mask1)
                t[1, j] = (keep1[0] & one) ^ (t[1, j] & t_keep)
            # a leaf's value: block 8 of the final seed, the first `width` words
            c0, c0h = aesni.mmo(s[0, j, 0] ^ np.uint64(_LEAF_TWEAK), s[0, j, 1], keys)
            c1, c1h = aesni.mmo(s[1, j, 0] ^ np.uint64(_LEAF_TWEAK), s[1, j, 1], keys)
            for k in range(width):
                value = (c1 - c0 if k == 0 else c1h - c0h) - v_alpha[j, k]
                last[j, k] = zero - value if t[1, j] == one else value

    return keygen_range


_KEYGENS = {width: _make_keygen(width) for width in WIDTHS}


def _u64(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().numpy().view(np.uint64)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64))


def _convert(seeds: np.ndarray, width: int) -> np.ndarray:
    """A leaf's value: `width` ring elements from each final seed (its MMO block 8)."""
    cipher = _Cipher(seeds.shape)
    cipher.inp[:] = seeds
    cipher.inp[:, 0] ^= np.uint64(_LEAF_TWEAK)
    return (cipher.run() ^ cipher.inp)[:, :width].copy()


def _root(seed: torch.Tensor) -> np.ndarray:
    s = _u64(seed).copy()
    s[:, 0] &= _NOT_ONE
    return s


def keygen(alpha: torch.Tensor, beta: torch.Tensor, seed0: torch.Tensor, seed1: torch.Tensor,
           threads: int | None = None) -> dict[str, torch.Tensor]:
    """Public correction words for DCFs of beta * [y < alpha] (alpha (n,) in [0, 2^63),
    beta (n, width)), given both parties' root seeds (n, 2). With AES-NI, compiled element
    by element in `threads` threads (default `keygen_threads(n)`); elsewhere level by level.

    Returns s_cw (levels, n, 2), v_cw (levels, n, width), t_cw (n, 2: the two control-bit
    corrections of level l at bits 2(l mod 32) and 2(l mod 32) + 1 of word l // 32) and
    last (n, width); party b's key is its root seed plus these.
    """
    n, width = beta.shape
    if width not in WIDTHS:
        raise ValueError(f"a DCF payload has {WIDTHS} ring elements, not {width}")
    threads = keygen_threads(n) if threads is None else max(1, min(threads, n))
    a, b = _u64(alpha), _u64(beta)
    if not n:
        return {"s_cw": torch.zeros((DOMAIN_BITS, 0, 2), dtype=torch.int64),
                "v_cw": torch.zeros((DOMAIN_BITS, 0, width), dtype=torch.int64),
                "t_cw": torch.zeros((0, 2), dtype=torch.int64), "last": torch.zeros((0, width), dtype=torch.int64)}
    s = np.stack([_root(seed0), _root(seed1)])
    t = np.stack([np.zeros(n, dtype=np.uint64), np.ones(n, dtype=np.uint64)])
    v_alpha = np.zeros((n, width), dtype=np.uint64)
    s_cw = np.empty((DOMAIN_BITS, n, 2), dtype=np.uint64)
    v_cw = np.empty((DOMAIN_BITS, n, width), dtype=np.uint64)
    t_cw_words = np.zeros((n, 2), dtype=np.uint64)
    if aesni.available():
        last = np.empty((n, width), dtype=np.uint64)
        step = -(-n // threads)
        ranges = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
        run = functools.partial(_KEYGENS[width], _ROUND_KEYS, a, b, s, t, v_alpha, s_cw, v_cw, t_cw_words, last)
        if len(ranges) == 1:
            run(0, n)
        else:  # element ranges side by side: the compiled code holds no GIL
            with ThreadPoolExecutor(len(ranges)) as pool:
                list(pool.map(lambda r: run(*r), ranges))
        return {"s_cw": _tensor(s_cw), "v_cw": _tensor(v_cw), "t_cw": _tensor(t_cw_words), "last": _tensor(last)}
    cipher = _Cipher((2, n, 4, 2))
    level_t_cw = np.empty(n, dtype=np.uint64)
    for level in range(DOMAIN_BITS):
        _all_inputs(s, cipher.inp)
        out = cipher.run()
        _key_step(cipher.inp, out, a, np.uint64(DOMAIN_BITS - 1 - level), b, s, t, v_alpha, s_cw[level],
                  v_cw[level], level_t_cw)
        t_cw_words[:, level // 32] |= level_t_cw << np.uint64(2 * (level % 32))
    last = _convert(s[1], width) - _convert(s[0], width) - v_alpha
    last[t[1] == 1] = np.uint64(0) - last[t[1] == 1]
    return {"s_cw": _tensor(s_cw), "v_cw": _tensor(v_cw), "t_cw": _tensor(t_cw_words), "last": _tensor(last)}


def _walk_compiled(s, y, s_cw, v_cw, t_cw, t, v, start: int) -> None:
    """The walk in one compiled call (AES-NI): adds the path values and leaf values of
    elements start.. of the keys into v (their per-element arrays s, y, t_cw, t, v given
    for those elements only)."""
    _WALKS[v.shape[1]](_ROUND_KEYS, s.reshape(-1), y, s_cw.reshape(-1), v_cw.reshape(-1), t_cw.reshape(-1), t,
                       v.reshape(-1), start, s_cw.shape[1])


CHUNK = 32768  # elements per chunk of the level-by-level walk (without AES-NI)


@numba.njit(cache=True, nogil=True, inline="always")
def _write_inputs(i, shift, s, y, inp):  # pragma: no cover - compiled
    """Element i's AES inputs at the level of `shift`, as `_expand` makes them: its seed's
    blocks for the child it takes, seed (tweak 2 + bit) and payload (4 + bit)."""
    one, two, four = np.uint64(1), np.uint64(2), np.uint64(4)
    bit = (y[i] >> shift) & one
    lo, hi = s[two * i], s[two * i + one]
    inp[four * i], inp[four * i + one] = lo ^ (two + bit), hi
    inp[four * i + two], inp[four * i + np.uint64(3)] = lo ^ (four + bit), hi


@numba.njit(cache=True, nogil=True)
def _first_inputs(s, y, shift, inp):  # pragma: no cover - compiled
    """The first level's AES inputs, from the root seeds (later levels': the step's pass)."""
    for j in range(y.shape[0]):
        _write_inputs(np.uint64(j), shift, s, y, inp)


def _make_level_step(width: int):
    """One level's corrections from its AES outputs (MMO: out xor inp), by `_update`, and
    the next level's inputs in the same pass; the width compiled in."""

    @numba.njit(cache=True, nogil=True)
    def step(inp, out, y, shift, next_shift, s, t, v, s_cw, v_cw, t_cw, word, t_shift, at):  # pragma: no cover
        one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
        for j in range(y.shape[0]):
            i = np.uint64(j)
            b = four * i
            _update(width, i, (y[i] >> shift) & one, out[b] ^ inp[b], out[b + one] ^ inp[b + one],
                    out[b + two] ^ inp[b + two], out[b + three] ^ inp[b + three], s, t, v, s_cw, v_cw, t_cw,
                    word, t_shift, at)
            _write_inputs(i, next_shift, s, y, inp)

    return step


_LEVEL_STEPS = {width: _make_level_step(width) for width in WIDTHS}


def _walk_by_level(s, y, s_cw, v_cw, t_cw, t, v, start: int) -> None:
    """The walk level by level from Python, AES by `cryptography` for a chunk at a time, the
    corrections compiled (the same `_update` as the compiled walk's), the leaves last
    (arguments and result as _walk_compiled's)."""
    n, width = v.shape
    total = s_cw.shape[1]
    flat_s_cw, flat_v_cw = s_cw.reshape(-1), v_cw.reshape(-1)
    for lo in range(0, n, CHUNK):
        part = slice(lo, min(n, lo + CHUNK))
        cipher = _Cipher((part.stop - lo, 2, 2))
        seeds, flat_t_cw, values = s[part].reshape(-1), t_cw[part].reshape(-1), v[part].reshape(-1)
        _first_inputs(seeds, y[part], np.uint64(DOMAIN_BITS - 1), cipher.flat_inp)
        for level in range(DOMAIN_BITS):
            shift = DOMAIN_BITS - 1 - level
            _LEVEL_STEPS[width](cipher.flat_inp, cipher.run().reshape(-1), y[part], np.uint64(shift),
                                np.uint64(max(shift - 1, 0)), seeds, t[part], values, flat_s_cw, flat_v_cw,
                                flat_t_cw, np.uint64(level // 32), np.uint64(2 * (level % 32)),
                                np.uint64(level * total + start + lo))
    v += _convert(s, width)


def evaluate_points(party: int, seed: torch.Tensor, cw: dict[str, torch.Tensor], ys: Sequence[torch.Tensor]
                    ) -> list[torch.Tensor]:
    """[evaluate(party, seed, cw, y) for y in ys], each y an input for every element of the
    keys, in one walk: the keys repeated once per input. For few elements at many points
    (a batch norm's channels among the half powers of two), where a call per point would
    cost more than its walk."""
    if len(ys) <= 1:
        return [evaluate(party, seed, cw, y) for y in ys]
    copies = len(ys)
    repeated = {"s_cw": cw["s_cw"].repeat(1, copies, 1), "v_cw": cw["v_cw"].repeat(1, copies, 1),
                "t_cw": cw["t_cw"].repeat(copies, 1), "last": cw["last"].repeat(copies, 1)}
    return list(evaluate(party, seed.repeat(copies, 1), repeated, torch.cat(list(ys))).split(len(ys[0])))


def evaluate(party: int, seed: torch.Tensor, cw: dict[str, torch.Tensor], y: torch.Tensor, start: int = 0
             ) -> torch.Tensor:
    """Party `party`'s additive shares (m, width) of beta * [y < alpha] for public y (m,),
    the inputs of the keys' elements start, ..., start + m - 1 (a part evaluated as soon as
    its opening arrives)."""
    s_cw, v_cw, t_cw, last = (_u64(cw[k]) for k in ("s_cw", "v_cw", "t_cw", "last"))
    width = last.shape[1]
    yv = _u64(y)
    if not len(yv):
        return torch.zeros((0, width), dtype=torch.int64)
    part = slice(start, start + len(yv))
    s = _root(seed[part])
    t = np.full(len(yv), party, dtype=np.uint64)
    v = np.zeros((len(yv), width), dtype=np.uint64)
    walk = _walk_compiled if aesni.available() else _walk_by_level
    walk(s, yv, s_cw, v_cw, t_cw[part], t, v, start)
    v += last[part] & (np.uint64(0) - t)[:, None]
    if party == 1:
        np.negative(v, out=v)
    return _tensor(v)
