"""Beaver products against plaintext torch, both operand kinds, torch.nn.functional options.

Products are exact in the ring; the only error is the one truncation. So the reference is
torch in float64 on the fixed-point-rounded inputs, and the bound is 1 unit of 2^-16 for
the dealer truncation (plus float64 rounding of the reference, far below that).
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
import torch.nn.functional as F

import mpcrt
from mpcrt import ops
from tests.conftest import run_pair

ULP = 2.0 ** -16


def q(x: torch.Tensor) -> torch.Tensor:
    """The fixed-point value the parties actually hold."""
    return torch.round(x.double() / ULP) * ULP


def sample(*shape: int, scale: float = 4.0, seed: int = 0) -> torch.Tensor:
    """Positive, negative, zero, tiny and large values mixed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    flat = x.view(-1)
    specials = torch.tensor([0.0, -0.0, ULP, -ULP, 3 * ULP, -(50.0 - ULP), 50.0, -1.0, 1.0 - ULP], dtype=torch.float64)
    k = min(len(specials), flat.numel())
    flat[:k] = specials[:k]
    return x


async def product(party, op: str, x, y, kinds: str, kwargs: dict):
    """kinds: which operands are shared ('ss', 'sp', 'ps')."""
    X = await party.input(x if party.id == 0 else None, src=0) if kinds[0] == "s" else x
    Y = await party.input(y if party.id == 1 else None, src=1) if kinds[1] == "s" else y
    out = await getattr(ops, op)(X, Y, **kwargs)
    return await out.reveal(), party.stats


CASES = [
    ("mul", (3, 5), (3, 5), {}, torch.mul),
    ("mul", (2, 3, 4), (4,), {}, torch.mul),  # broadcasting
    ("matmul", (7, 5), (5, 3), {}, torch.matmul),
    ("matmul", (4, 3, 6), (6, 2), {}, torch.matmul),  # batched
    ("linear", (5, 6), (4, 6), {}, F.linear),
    ("conv2d", (2, 3, 9, 7), (4, 3, 3, 3), {"stride": 2, "padding": 1}, F.conv2d),
    ("conv2d", (1, 4, 8, 8), (6, 2, 3, 3), {"groups": 2, "dilation": 2}, F.conv2d),
    ("conv2d", (3, 1, 6, 6), (2, 1, 4, 4), {"stride": (2, 1), "padding": (1, 0)}, F.conv2d),
    ("conv_transpose2d", (2, 4, 4, 4), (4, 3, 4, 4), {"stride": 2, "padding": 1}, F.conv_transpose2d),
    ("conv_transpose2d", (1, 4, 3, 5), (4, 2, 3, 3), {"stride": 2, "output_padding": 1, "groups": 2},
     F.conv_transpose2d),
    ("conv_transpose2d", (1, 2, 3, 3), (2, 3, 3, 3), {"dilation": 2}, F.conv_transpose2d),
]


@pytest.mark.parametrize("kinds", ["ss", "sp", "ps"])
@pytest.mark.parametrize(("op", "shape_x", "shape_y", "kwargs", "reference"), CASES)
async def test_products_match_torch(op, shape_x, shape_y, kwargs, reference, kinds):
    x, y = sample(*shape_x, seed=1), sample(*shape_y, seed=2, scale=1.0)
    expected = reference(q(x), q(y), **kwargs)
    for got, _ in await run_pair(product, op, x, y, kinds, kwargs):
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1 * ULP + 1e-12


async def with_bias(party, op: str, x, w, b, kwargs):
    X = await party.input(x if party.id == 0 else None, src=0)
    W = await party.input(w if party.id == 1 else None, src=1)
    B = await party.input(b if party.id == 1 else None, src=1)
    shared = await getattr(ops, op)(X, W, B, **kwargs)
    public = await getattr(ops, op)(X, W, b, **kwargs)
    return await shared.reveal(), await public.reveal()


@pytest.mark.parametrize(("op", "shape_x", "shape_w", "kwargs", "reference"), [
    ("linear", (3, 5), (2, 5), {}, F.linear),
    ("conv2d", (2, 3, 6, 6), (4, 3, 3, 3), {"padding": 1}, F.conv2d),
    ("conv_transpose2d", (2, 4, 3, 3), (4, 2, 4, 4), {"stride": 2, "padding": 1}, F.conv_transpose2d),
])
async def test_bias_shared_or_public(op, shape_x, shape_w, kwargs, reference):
    x, w = sample(*shape_x, seed=3), sample(*shape_w, seed=4, scale=0.5)
    b = sample(shape_w[0] if op != "conv_transpose2d" else shape_w[1], seed=5)
    expected = reference(q(x), q(w), q(b), **kwargs)
    for shared, public in await run_pair(with_bias, op, x, w, b, kwargs):
        assert float((shared - expected).abs().max()) <= ULP + 1e-12
        assert float((public - expected).abs().max()) <= ULP + 1e-12


async def squares_and_means(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    return [await v.reveal() for v in (await ops.square(X), await ops.mean(X), await ops.mean(X, dim=1),
                                       await ops.mean(X, dim=0, keepdim=True), await ops.mul(X, 3))]


async def test_square_and_mean():
    x = sample(6, 5, seed=6)
    sq, m_all, m1, m0, triple = (await run_pair(squares_and_means, x))[0]
    assert float((sq - q(x) ** 2).abs().max()) <= ULP
    # mean: the exact sum, divided by 2^s (one unit), times c in [1, 2) at 16 extra bits (so
    # that unit becomes < 2, and c's rounding is relative 2^-17), then one more truncation
    # (one unit): at most 3 units and the relative term
    for got, want in ((m_all, q(x).mean()), (m1, q(x).mean(dim=1)), (m0, q(x).mean(dim=0, keepdim=True))):
        assert got.shape == want.shape
        bound = 3 * ULP + want.abs() * 2.0 ** -17 + 1e-12
        assert bool(((got - want).abs() <= bound).all())
    assert torch.equal(triple, q(x) * 3)  # integer factor: exact, no truncation


async def integer_times_real(party):
    n = await party.input(torch.tensor([3, -2]) if party.id == 0 else None, src=0)
    x = await party.input(torch.tensor([1.5, 0.25]) if party.id == 1 else None, src=1)
    nn = await ops.mul(n, n)
    nx = await ops.mul(n, x)
    return (await nn.reveal(), nn.frac_bits, party.stats.op("mul/trunc").rounds, await nx.reveal(), nx.dtype)


async def test_integer_shares_need_no_truncation():
    nn, frac_bits, trunc_rounds, nx, dtype = (await run_pair(integer_times_real))[0]
    assert torch.equal(nn, torch.tensor([9, 4])) and frac_bits == 0
    assert torch.equal(nx, torch.tensor([4.5, -0.5])) and dtype.is_floating_point
    assert trunc_rounds == 0


async def two_public(party):
    return await ops.mul(torch.ones(2), torch.ones(2))


async def test_two_public_operands_is_a_clear_error():
    results = await run_pair(two_public, timeout=2)
    assert all(isinstance(r, TypeError) and "at least one operand" in str(r) for r in results)


async def no_dealer(party):
    x = await party.input(torch.ones(1) if party.id == 0 else None, src=0)
    return await ops.mul(x, x)


async def test_products_without_a_dealer_say_what_to_do():
    import asyncio

    from tests.conftest import make_link

    a, b = await make_link("memory")
    results = await asyncio.gather(mpcrt.Party(0, a, timeout=2).run(no_dealer),
                                   mpcrt.Party(1, b, timeout=2).run(no_dealer), return_exceptions=True)
    assert any(isinstance(r, RuntimeError) and "no dealer" in str(r) for r in results)


async def masked_chain(party, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
    """Products of truncation outputs, affine maps of them, a fresh opening and a broadcast:
    each product opens only what is not masked yet."""
    X = await party.input(x if party.id == 0 else None, src=0)
    Y = await party.input(y if party.id == 1 else None, src=1)
    G = await party.input(g if party.id == 1 else None, src=1)
    u = await ops.mul(X, Y)  # opens x and y; u is a truncation's output: masked
    v = await ops.mul(X, 0.75)  # a public product: masked too
    assert u.opening is not None and v.opening is not None
    sent, rounds = party.stats.bytes_sent, party.stats.rounds
    uv = await ops.mul(1.5 - u, -v * 3)  # affine maps keep the masks: no opening, one truncation
    uu = await ops.square(u)  # a square of a masked share: no opening
    ug = await ops.mul(u, G)  # G opened (3 elements), u not
    flat = await ops.mul(u.reshape(-1), v.flatten())  # reshaped masks are known masks too
    cost = (party.stats.bytes_sent - sent, party.stats.rounds - rounds)
    plain = await ops.mul(u + v, X)  # a sum of two masks is not a known mask: opened as usual
    return [await t.reveal() for t in (u, v, uv, uu, ug, plain, flat)], cost


async def test_products_of_masked_shares_open_nothing_more():
    gen = torch.Generator().manual_seed(5)
    x = sample(4, 3, 2, 2, seed=7)
    y = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64) * 3
    y.view(-1)[:4] = torch.tensor([0.0, -1.0, 1.0 - ULP, -(ULP)])
    g = torch.randn(1, 3, 1, 1, generator=gen, dtype=torch.float64)
    xq, yq, gq = q(x), q(y), q(g)
    for (u, v, uv, uu, ug, plain, flat), (sent, rounds) in await run_pair(masked_chain, x, y, g):
        # u, v: one truncation each from the held values; every later product adds one more
        assert float((u - xq * yq).abs().max()) <= ULP
        assert float((v - xq * 0.75).abs().max()) <= ULP
        assert float((uv - (1.5 - u) * (-3 * v)).abs().max()) <= ULP
        assert float((uu - u * u).abs().max()) <= ULP
        assert float((ug - u * gq).abs().max()) <= ULP
        assert float((plain - (u + v) * xq).abs().max()) <= ULP
        assert float((flat - (u * v).reshape(-1)).abs().max()) <= ULP
        # four truncations (8 bytes an element each) and G's opening, one round each
        assert sent == 8 * (4 * 48 + 3)
        assert rounds == 5


async def scaled(party, x: torch.Tensor, factor: float):
    X = await party.input(x if party.id == 0 else None, src=0)
    await X.reveal()  # both past the input's round: the counts below are the scale's alone
    await asyncio.sleep(0)
    out = []
    for bound in (None, 2.0 ** 20):
        rounds = party.stats.rounds
        y = await ops.scale(X, factor, bound=bound)
        used = party.stats.rounds - rounds
        out.append((await y.reveal(), used))
    return out


@pytest.mark.parametrize("factor", [0.01, -0.3, 1e-5])
async def test_scale_with_a_bound_takes_one_round(factor):
    x = sample(40, seed=9, scale=1000.0)
    for (plain, plain_rounds), (bounded, bounded_rounds) in await run_pair(scaled, x, factor):
        # scale's documented bound: 3 units (two truncations and the factor's rounding at 2^-17 relative);
        # one truncation: 1 unit and the factor's rounding
        relative = abs(factor) * 1000 * 4 * 2.0 ** -17
        assert float((plain - q(x) * factor).abs().max()) <= 3 * ULP + relative
        assert float((bounded - q(x) * factor).abs().max()) <= ULP + relative
        assert (plain_rounds, bounded_rounds) == (2, 1)


async def scaled_at_exponent(party, x: torch.Tensor, factors: list[float], exponent: int):
    X = await party.input(x if party.id == 0 else None, src=0)
    out = []
    for factor in factors:
        for bound in (None, 2.0 ** 20):
            party.dealer.recording = []
            y = await ops.scale(X, factor, bound=bound, exponent=exponent)
            out.append((factor, bound, await y.reveal(), [r.spec for r in party.dealer.recording]))
    party.dealer.recording = None
    return out


async def test_scale_at_a_fixed_exponent_takes_the_same_steps_for_every_factor():
    """Adam's bias correction lr / (1 - b1^t) drifts over powers of two; at lr's exponent
    every call asks the dealer for the same material (mpcrt.stream), within scale's bound."""
    lr, b1 = 2e-4, 0.5
    factors = [lr / (1 - b1 ** t) for t in (1, 2, 3, 10, 100)]  # 4e-4 down to 2e-4: three exponents
    x = sample(40, seed=9, scale=1000.0)
    for out in await run_pair(scaled_at_exponent, x, factors, -13):
        for bound in (None, 2.0 ** 20):
            plans = {str(plan) for _, b, _, plan in out if b == bound}
            assert len(plans) == 1
        for factor, bound, y, _ in out:
            relative = abs(factor) * 1000 * 4 * 2.0 ** -17  # c is rounded at 2^-16 absolute, c >= 1
            # without the bound, x / 2^13 is truncated first and c, up to 2^(extra + 1), multiplies its error
            extra = math.floor(math.log2(factor)) + 13
            units = 1 if bound else 2 ** (extra + 1) + 1
            assert float((y - q(x) * factor).abs().max()) <= units * ULP + relative


@pytest.mark.parametrize("exponent", [-11, -30])
def test_scale_refuses_an_exponent_the_factor_does_not_fit(exponent):
    async def program(party):
        X = await party.input(torch.ones(3) if party.id == 0 else None, src=0)
        await ops.scale(X, 3e-4, exponent=exponent)

    with pytest.raises(ValueError, match="fixed exponent"):
        mpcrt.run_local(program)
