"""Distributed comparison functions (function secret sharing), vectorized over elements.

A DCF key pair for (alpha, beta) lets two parties holding a public y compute additive
shares of beta * [y < alpha] with no interaction (Boyle, Gilboa, Ishai, CCS 2016; the
variant of Boyle et al., Eurocrypt 2021, Fig. 3). Keys walk a binary tree over the bits
of y, most significant first; at each level a length-doubling PRG expands a 128-bit seed,
and public correction words keep the two parties' paths equal off alpha's path and
correct on it. One key per element; keygen and evaluation run all elements at once.

PRG: fixed-key AES-128 in Matyas-Meyer-Oseas mode, G(s) = AES_k(s xor i) xor s xor i for
i = 1..4 (seeds left and right, two ring values, two control bits): one AES-ECB call per
level for all elements.
"""

from __future__ import annotations

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpcrt import prg

DOMAIN_BITS = 63
_KEY = prg.derive_key(b"mpcrt-dcf-fixed-key")
_TWEAKS = torch.tensor([1, 2, 3, 4], dtype=torch.int64).reshape(1, 4, 1)


def expand(seeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """G(s) for (n, 2) int64 seeds: (s_left, s_right, v_left, v_right, t_left, t_right)."""
    n = seeds.shape[0]
    blocks = seeds.reshape(n, 1, 2).expand(n, 4, 2).clone()
    blocks[:, :, 0] ^= _TWEAKS[:, :, 0]
    encryptor = Cipher(algorithms.AES(_KEY), modes.ECB()).encryptor()
    data = blocks.contiguous().numpy().tobytes()
    out = torch.frombuffer(bytearray(encryptor.update(data)), dtype=torch.int64).reshape(n, 4, 2) ^ blocks
    t_bits = out[:, 3, 0]
    return out[:, 0], out[:, 1], out[:, 2, 0], out[:, 2, 1], t_bits & 1, (t_bits >> 1) & 1


def _pick(bit: torch.Tensor, one: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """one where bit == 1, else zero (bit broadcast over trailing seed words)."""
    b = bit.bool()
    return torch.where(b.reshape(-1, *([1] * (one.ndim - 1))), one, zero)


def _mask(t: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    return seeds & (-t).reshape(-1, 1)


def keygen(alpha: torch.Tensor, beta: torch.Tensor, seed0: torch.Tensor, seed1: torch.Tensor
           ) -> dict[str, torch.Tensor]:
    """Public correction words for DCFs of beta * [y < alpha], given both parties' root seeds.

    Returns s_cw (levels, n, 2), v_cw (levels, n), t_cw (n, 2: the two control-bit
    corrections of level l at bits 2(l mod 32) and 2(l mod 32) + 1 of word l // 32) and
    last (n,); party b's key is its root seed plus these.
    """
    n = alpha.shape[0]
    s0, s1 = seed0.clone(), seed1.clone()
    t0, t1 = torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)
    v_alpha = torch.zeros(n, dtype=torch.int64)
    s_cws, v_cws = [], []
    t_cw_words = torch.zeros(n, 2, dtype=torch.int64)
    for level in range(DOMAIN_BITS):
        a = (alpha >> (DOMAIN_BITS - 1 - level)) & 1
        sl0, sr0, vl0, vr0, tl0, tr0 = expand(s0)
        sl1, sr1, vl1, vr1, tl1, tr1 = expand(s1)
        sign = 1 - 2 * t1
        s_cw = _pick(a, sl0 ^ sl1, sr0 ^ sr1)  # the losing side: left when a = 1
        v_lose0, v_lose1 = _pick(a, vl0, vr0), _pick(a, vl1, vr1)
        v_keep0, v_keep1 = _pick(a, vr0, vl0), _pick(a, vr1, vl1)
        # y < alpha on every path that leaves alpha's path to the left (y bit 0, alpha bit 1)
        v_cw = sign * (v_lose1 - v_lose0 - v_alpha + a * beta)
        v_alpha = v_alpha - v_keep1 + v_keep0 + sign * v_cw
        tl_cw, tr_cw = tl0 ^ tl1 ^ a ^ 1, tr0 ^ tr1 ^ a
        t_keep_cw = _pick(a, tr_cw, tl_cw)
        s0 = _pick(a, sr0, sl0) ^ _mask(t0, s_cw)
        s1 = _pick(a, sr1, sl1) ^ _mask(t1, s_cw)
        t0 = _pick(a, tr0, tl0) ^ (t0 & t_keep_cw)
        t1 = _pick(a, tr1, tl1) ^ (t1 & t_keep_cw)
        s_cws.append(s_cw)
        v_cws.append(v_cw)
        t_cw_words[:, level // 32] |= (tl_cw | (tr_cw << 1)) << (2 * (level % 32))
    last = (1 - 2 * t1) * (s1[:, 0] - s0[:, 0] - v_alpha)
    return {"s_cw": torch.stack(s_cws), "v_cw": torch.stack(v_cws), "t_cw": t_cw_words, "last": last}


def evaluate(party: int, seed: torch.Tensor, cw: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Party `party`'s additive share of beta * [y < alpha] for public y (n,)."""
    s = seed.clone()
    t = torch.full_like(y, party)
    v = torch.zeros_like(y)
    sign = 1 - 2 * party
    for level in range(DOMAIN_BITS):
        bit = (y >> (DOMAIN_BITS - 1 - level)) & 1
        sl, sr, vl, vr, tl, tr = expand(s)
        s_cw, t_cw = cw["s_cw"][level], (cw["t_cw"][:, level // 32] >> (2 * (level % 32))) & 3
        sl, sr = sl ^ _mask(t, s_cw), sr ^ _mask(t, s_cw)
        tl, tr = tl ^ (t & t_cw & 1), tr ^ (t & (t_cw >> 1) & 1)
        v = v + sign * (_pick(bit, vr, vl) + t * cw["v_cw"][level])
        s, t = _pick(bit, sr, sl), _pick(bit, tr, tl)
    return v + sign * (s[:, 0] + t * cw["last"])
