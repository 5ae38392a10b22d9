"""Fixed-point encoding on Z_2^64: exact decode (negatives too), range checks."""

from __future__ import annotations

import pytest
import torch

from mpcrt import ring

F = ring.DEFAULT_FRAC_BITS
ULP = 2.0 ** -F


def test_negative_values_near_integers_decode_exactly():
    # CrypTen decodes -3.99997 as -4.99995; the anchor for this test
    for k in range(1, 2000):
        x = torch.tensor([-k + ULP, -k + 2 * ULP, -k, -k - ULP, k - ULP], dtype=torch.float64)
        assert torch.equal(ring.decode(ring.encode(x, F), F), x), k


def test_round_trip_error_is_at_most_half_an_ulp():
    x = torch.randn(100_000, dtype=torch.float64) * 1000
    err = (ring.decode(ring.encode(x, F), F) - x).abs().max()
    assert err <= ULP / 2


def test_zero_tiny_and_large():
    x = torch.tensor([0.0, -0.0, ULP / 4, -ULP / 4, 2.0 ** 45, -(2.0 ** 45)], dtype=torch.float64)
    assert torch.equal(ring.decode(ring.encode(x, F), F), torch.tensor([0, 0, 0, 0, 2.0 ** 45, -(2.0 ** 45)],
                                                                         dtype=torch.float64))


def test_ring_arithmetic_wraps_modulo_2_64():
    a = torch.tensor([2 ** 63 - 1], dtype=torch.int64)
    assert int(a + 1) == -(2 ** 63)
    # shares of a value wrap, the sum does not care
    x = ring.encode(torch.tensor([-1.5]), F)
    r = torch.tensor([2 ** 62 + 12345], dtype=torch.int64)
    assert torch.equal(ring.decode((x - r) + r, F), torch.tensor([-1.5], dtype=torch.float64))


def test_decode_to_requested_dtype():
    v = ring.encode(torch.tensor([1.25, -2.5]), F)
    assert ring.decode(v, F, torch.float32).dtype == torch.float32
    assert torch.equal(ring.decode(torch.tensor([7, -7]), 0, torch.int32), torch.tensor([7, -7], dtype=torch.int32))


def test_integers_are_shifted_into_place():
    assert torch.equal(ring.encode(torch.tensor([3, -2]), 4), torch.tensor([48, -32]))
    assert torch.equal(ring.encode(torch.tensor([True, False]), 0), torch.tensor([1, 0]))


@pytest.mark.parametrize("bad", [2.0 ** 46, -(2.0 ** 46), 1e30])
def test_overflow_is_detected_on_encode(bad):
    with pytest.raises(OverflowError, match="does not fit"):
        ring.encode(torch.tensor([1.0, bad], dtype=torch.float64), F)


def test_largest_values_that_fit():
    x = torch.tensor([2.0 ** 46 - 1, -(2.0 ** 46 - 1)], dtype=torch.float64)
    assert torch.equal(ring.decode(ring.encode(x, F), F), x)


def test_integer_overflow_including_the_most_negative_int64():
    with pytest.raises(OverflowError):
        ring.encode(torch.tensor([-(2 ** 63)], dtype=torch.int64), 0)
    with pytest.raises(OverflowError):
        ring.encode(torch.tensor([2 ** 46], dtype=torch.int64), F)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad):
    with pytest.raises(ValueError, match="NaN or infinite"):
        ring.encode(torch.tensor([bad]), F)


def test_frac_bits_are_checked():
    with pytest.raises(ValueError, match="frac_bits"):
        ring.encode(torch.tensor([1.0]), 40)
    for f in (2, 8, 20, 24):
        x = torch.tensor([-3.75, 1.5], dtype=torch.float64)
        assert torch.equal(ring.decode(ring.encode(x, f), f), x)
