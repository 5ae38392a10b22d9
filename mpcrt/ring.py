"""The ring Z_2^64 on torch int64, and fixed-point encoding with `frac_bits` fractional bits.

torch int64 arithmetic wraps modulo 2^64, which is exactly ring arithmetic. A real x is
encoded as round(x * 2^f). Decoding converts the signed integer to float64 and scales by
2^-f in one step, which is exact for every value below 2^53 in magnitude, negatives
included (no floor-then-fraction split, which is how CrypTen turns -3.99997 into -4.99995).
"""

from __future__ import annotations

import torch

RING_BITS = 64
DEFAULT_FRAC_BITS = 16
# Encoded magnitudes stay below 2^62, leaving one bit of headroom for sums and the
# truncation protocol's offset of 2^62 (x + 2^62 < 2^63).
MAX_ENCODED = 1 << 62


def check_frac_bits(frac_bits: int) -> int:
    if not isinstance(frac_bits, int) or not 0 <= frac_bits <= 30:
        raise ValueError(f"frac_bits must be an integer in [0, 30], got {frac_bits!r}")
    return frac_bits


def encode(x: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """Fixed-point ring elements of a real or integer tensor; raises if out of range."""
    check_frac_bits(frac_bits)
    if not x.is_floating_point():
        xi = x.to(torch.int64)
        limit = MAX_ENCODED >> frac_bits
        if bool(((xi >= limit) | (xi <= -limit)).any()):  # not abs(): abs(-2^63) wraps
            raise OverflowError(f"an integer input does not fit with frac_bits={frac_bits}: "
                                f"|x| must be < 2^{62 - frac_bits}")
        return xi << frac_bits
    x = x.to(torch.float64)
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("cannot encode NaN or infinite values")
    scaled = torch.round(x * (1 << frac_bits))
    if scaled.numel() and float(scaled.abs().max()) >= MAX_ENCODED:
        raise OverflowError(f"value {float(x.abs().max()):.6g} does not fit in fixed point with "
                            f"frac_bits={frac_bits}: |x| must be < 2^{62 - frac_bits} = "
                            f"{2.0 ** (62 - frac_bits):.6g}; scale the data or lower frac_bits")
    return scaled.to(torch.int64)


def encode_constant(value: float, frac_bits: int) -> int:
    """A public real as one ring integer with `frac_bits` fractional bits, which may exceed
    the job's f (protocols carry constants at extra precision, then truncate once)."""
    return round(value * (1 << frac_bits))


def decode(v: torch.Tensor, frac_bits: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real values of ring elements (signed, two's complement) in `dtype`."""
    if frac_bits == 0 and not dtype.is_floating_point:
        return v.to(dtype)
    return (v.to(torch.float64) * (2.0 ** -frac_bits)).to(dtype)
