"""Shared tensors end to end: input, local arithmetic, reveal; against plaintext torch.

Tolerances are in units of 2^-f (f = 16): inputs are rounded to the nearest multiple of
2^-f, so each input contributes at most half a unit; integer factors scale that error.
"""

from __future__ import annotations

import pytest
import torch

import mpcrt
from tests.conftest import run_pair

ULP = 2.0 ** -16


async def arithmetic(party: mpcrt.Party, a: torch.Tensor, b: torch.Tensor):
    x = await party.input(a if party.id == 0 else None, src=0)
    y = await party.input(b if party.id == 1 else None, src=1)
    return [await z.reveal() for z in (x + y, x - y, -x, x * 3, -2 * y, x * torch.tensor([1, -4, 0, 7]),
                                       x + 1.5, 2.25 - y, x + torch.tensor([0.5, 0, 0, -1]), x)]


async def test_local_operations_match_torch():
    a = torch.tensor([1.5, -3.99997, 0.0, 123.456], dtype=torch.float64)
    b = torch.tensor([-0.25, 2.0, -1e-4, -999.0], dtype=torch.float64)
    expected = [a + b, a - b, -a, a * 3, -2 * b, a * torch.tensor([1, -4, 0, 7]), a + 1.5, 2.25 - b,
                a + torch.tensor([0.5, 0, 0, -1]), a]
    bounds = [1, 1, 0.5, 1.5, 1, 3.5, 0.5, 0.5, 0.5, 0.5]  # in ULPs
    for result in await run_pair(arithmetic, a, b):
        for got, want, bound in zip(result, expected, bounds, strict=True):
            assert got.dtype == torch.float64
            assert float((got - want).abs().max()) <= bound * ULP


async def typed(party: mpcrt.Party, value):
    x = await party.input(value if party.id == 0 else None, src=0)
    return await x.reveal(), x.frac_bits


@pytest.mark.parametrize("value", [torch.tensor([1.25, -2.5], dtype=torch.float32), torch.tensor([[3, -4]]),
                                   torch.tensor(7.0), torch.zeros(0, 2), torch.tensor([-5], dtype=torch.int32)])
async def test_reveal_returns_the_input_dtype_and_shape(value):
    for opened, frac_bits in await run_pair(typed, value):
        assert opened.dtype == value.dtype and opened.shape == value.shape
        assert torch.equal(opened, value)
        assert frac_bits == (16 if value.is_floating_point() else 0)


async def reveal_to_one(party: mpcrt.Party):
    x = await party.input(torch.tensor([4.0, -1.0]) if party.id == 0 else None, src=0)
    to0 = await x.reveal(to=0)
    to1 = await x.reveal(to=1)
    return to0, to1, party.stats.op("reveal").as_dict()


async def test_reveal_to_one_party_only():
    (a0, a1, s0), (b0, b1, s1) = await run_pair(reveal_to_one)
    assert torch.equal(a0, torch.tensor([4.0, -1.0])) and a1 is None
    assert b0 is None and torch.equal(b1, torch.tensor([4.0, -1.0]))
    assert s0["bytes_sent"] == s0["bytes_received"] == s1["bytes_sent"] == 16


async def shares_look_random(party: mpcrt.Party):
    x = await party.input(torch.zeros(10_000) if party.id == 0 else None, src=0)
    return x.value


async def test_shares_of_zero_are_random_and_sum_to_zero():
    v0, v1 = await run_pair(shares_look_random)
    assert torch.equal(v0 + v1, torch.zeros(10_000, dtype=torch.int64))
    assert v1.unique().numel() == 10_000  # no structure leaks into the non-owner's share


async def misuse(party: mpcrt.Party, what: str):
    if what == "owner passes None":
        await party.input(None, src=0)
    elif what == "other passes a value":
        await party.input(torch.ones(1), src=1 - party.id)
    elif what == "float factor":
        x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
        return x * 0.5
    elif what == "share times share":
        x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
        return x * x
    elif what == "bad src":
        await party.input(torch.ones(1), src=2)


@pytest.mark.parametrize(("what", "error", "message"), [
    ("owner passes None", ValueError, "must pass its value"),
    ("other passes a value", ValueError, "pass None"),
    ("float factor", TypeError, "integer public factors"),
    ("share times share", TypeError, "interactive"),
    ("bad src", ValueError, "src must be 0 or 1"),
])
async def test_misuse_gives_clear_errors(what, error, message):
    results = await run_pair(misuse, what, timeout=2)
    assert any(isinstance(r, error) and message in str(r) for r in results), results


async def mixed_scales(party: mpcrt.Party):
    x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
    n = await party.input(torch.ones(1, dtype=torch.int64) if party.id == 0 else None, src=0)
    return x + n


async def test_adding_shares_of_different_scales_is_refused():
    results = await run_pair(mixed_scales, timeout=2)
    assert any(isinstance(r, ValueError) and "scales differ" in str(r) for r in results)
    # the party that fails first tells the other, which may not have got that far
    assert all(isinstance(r, ValueError | mpcrt.PeerAborted) for r in results)


async def reshaping(party, a: torch.Tensor):
    x = await party.input(a if party.id == 0 else None, src=0)
    views = [x.reshape(4, 6), x.view(-1), x.flatten(1), x[1], x[:, 1:3], x[..., ::2], x.transpose(0, 2), x.t()
             if x.ndim == 2 else x.permute(2, 0, 1), x.unsqueeze(1), x.unsqueeze(0).squeeze(0),
             x[0:1].squeeze(0), x.sum(), x.sum(dim=1), x.sum(dim=(0, 2), keepdim=True),
             x.pad((1, 2)), x.pad((1, 1, 0, 1), value=-2.5), mpcrt.cat([x, -x], dim=1), mpcrt.stack([x, x * 2], dim=0),
             x[0].expand(3, 3, 4)]
    return [await v.reveal() for v in views], (x.ndim, x.numel(), len(x))


async def test_local_reshaping_ops_match_torch():
    a = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) - 11.5
    expected = [a.reshape(4, 6), a.view(-1), a.flatten(1), a[1], a[:, 1:3], a[..., ::2], a.transpose(0, 2),
                a.permute(2, 0, 1), a.unsqueeze(1), a, a[0], a.sum(), a.sum(dim=1), a.sum(dim=(0, 2), keepdim=True),
                torch.nn.functional.pad(a, (1, 2)), torch.nn.functional.pad(a, (1, 1, 0, 1), value=-2.5),
                torch.cat([a, -a], dim=1), torch.stack([a, a * 2]), a[0].expand(3, 3, 4)]
    for results, (ndim, numel, length) in await run_pair(reshaping, a):
        assert (ndim, numel, length) == (3, 24, 2)
        for got, want in zip(results, expected, strict=True):
            assert got.shape == want.shape and torch.equal(got, want)


async def joins_of_different_scales(party):
    x = await party.input(torch.ones(2) if party.id == 0 else None, src=0)
    n = await party.input(torch.ones(2, dtype=torch.int64) if party.id == 0 else None, src=0)
    return mpcrt.cat([x, n])


async def test_joining_shares_of_different_scales_is_refused():
    results = await run_pair(joins_of_different_scales, timeout=2)
    assert any(isinstance(r, ValueError) and "fixed-point scales" in str(r) for r in results)


def test_known_mask_factors_wrap_like_ring_elements():
    from mpcrt.shares import Opening, ring_int

    assert ring_int(1 << 64) == 0 and ring_int((1 << 63) + 5) == -(1 << 63) + 5 and ring_int(-7) == -7
    mask = Opening(("mask", (1,), "", ((2,),), (2,)), None, torch.zeros(2, dtype=torch.int64))
    assert mask.affine(1 << 40).affine(1 << 40).factor == 0  # 2^80 is 0 in the ring, not an overflow
