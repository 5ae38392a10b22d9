"""Truncation: the dealer protocol is exact up to one unit everywhere below 2^62; the
SecureML local shift fails with probability |x|/2^64, as documented."""

from __future__ import annotations

import pytest
import torch

from mpcrt import ArithmeticShare, ops
from mpcrt.ring import MAX_ENCODED
from tests.conftest import run_pair


async def truncate_raw(party, values: torch.Tensor, bits: int, method: str):
    """Share integers (as a scale-`bits` fixed-point value) and truncate them by `bits`."""
    x = await party.input(values if party.id == 0 else None, src=0)  # integers: frac_bits 0
    x = ArithmeticShare(party, x.value, bits, torch.float64)  # the same ring values at scale 2^-bits
    y = await ops.truncate(x, bits, method)
    opened = await ArithmeticShare(party, y.value, 0, torch.int64).reveal()  # the raw integer result
    return opened, party.stats.op("trunc").as_dict()


def floor_div(v: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.div(v, 2 ** bits, rounding_mode="floor")


@pytest.mark.parametrize("bits", [1, 16, 20, 32])
async def test_dealer_truncation_is_within_one_unit_up_to_2_62(bits):
    g = torch.Generator().manual_seed(bits)
    big = torch.randint(-(MAX_ENCODED - 1), MAX_ENCODED - 1, (20_000,), generator=g)
    edges = torch.tensor([0, 1, -1, 2 ** bits, -(2 ** bits), 2 ** bits - 1, -(2 ** bits) + 1,
                          MAX_ENCODED - 1, -(MAX_ENCODED - 1), 7 * 2 ** bits + 3, -7 * 2 ** bits - 3])
    values = torch.cat([big, edges, torch.randint(-(2 ** 20), 2 ** 20, (20_000,), generator=g)])
    opened, cost = (await run_pair(truncate_raw, values, bits, "dealer"))[0]
    error = opened - floor_div(values, bits)
    assert int(error.min()) >= 0 and int(error.max()) <= 1
    assert cost == {"rounds": 1, "messages_sent": 1, "messages_received": 1,
                    "bytes_sent": 8 * len(values), "bytes_received": 8 * len(values)}


async def test_truncation_stress_one_million_products():
    """1e6 fixed-point products of mixed magnitudes: never more than 2 units off."""
    async def products(party, x, y):
        X = await party.input(x if party.id == 0 else None, src=0)
        Y = await party.input(y if party.id == 1 else None, src=1)
        return await (await ops.mul(X, Y)).reveal()

    g = torch.Generator().manual_seed(7)
    scales = torch.tensor([1e-3, 1.0, 100.0, 3e4], dtype=torch.float64)
    x = torch.randn(1_000_000, generator=g, dtype=torch.float64) * scales.repeat(250_000)
    y = torch.randn(1_000_000, generator=g, dtype=torch.float64) * scales.flip(0).repeat(250_000)
    ulp = 2.0 ** -16
    qx, qy = torch.round(x / ulp) * ulp, torch.round(y / ulp) * ulp
    got = (await run_pair(products, x, y, timeout=60))[0]
    assert float(((got - qx * qy) / ulp).abs().max()) <= 2


async def test_local_shift_fails_as_documented_and_dealer_does_not():
    bits = 16
    g = torch.Generator().manual_seed(3)
    values = torch.randint(-(2 ** 60), 2 ** 60, (20_000,), generator=g)  # |x| up to 2^60
    local, cost = (await run_pair(truncate_raw, values, bits, "local"))[0]
    wrong = ((local - floor_div(values, bits)).abs() > 1).double().mean()
    # shares x - r and r wrap for r in a window of width |x|: rate E|x| / 2^64 = 2^59 / 2^64 = 1/32
    assert 0.025 < float(wrong) < 0.038
    assert cost["rounds"] == 0
    dealer, _ = (await run_pair(truncate_raw, values, bits, "dealer"))[0]
    assert int((dealer - floor_div(values, bits)).abs().max()) <= 1


async def bad_truncations(party, what):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    if what == "too many bits":
        return await ops.truncate(x, 17)
    return await ops.truncate(x, 8, "rounding")


@pytest.mark.parametrize(("what", "message"), [("too many bits", "cannot truncate 17 bits"),
                                                ("unknown method", "must be one of")])
async def test_bad_truncation_requests(what, message):
    results = await run_pair(bad_truncations, what, timeout=2)
    assert any(isinstance(r, ValueError) and message in str(r) for r in results)
