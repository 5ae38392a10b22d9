"""Dealer material streamed ahead of repeating iterations (mpcrt.stream)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import torch

from mpcrt import ops
from mpcrt.dealer import DealerClient, LocalDealer
from mpcrt.dealer.admission import DealerLimits, DealerRefused
from mpcrt.errors import DealerError
from mpcrt.runtime import Party
from mpcrt.scope import keyed_scope
from mpcrt.stream import MaterialStream, held_bytes
from transports import pair

SEEDS = (b"0" * 16, b"1" * 16)


async def iteration(party, x, w, changed: str = ""):
    """Products, truncations, a comparison tree and masked squares: linked requests included."""
    y = await ops.matmul(x, w)
    if changed == "shape":  # the same step as the plan's matmul-truncation, another shape
        y = await ops.matmul(x[:1], w)
    z = await ops.sigmoid(y)
    if changed != "skip":
        z = await ops.square(z)
    if changed == "extra":
        z = await ops.mul(z, z)
    return z


async def program(party, iterations: int, window: int | None, change_at: int = 0, change: str = ""):
    party.prefetched = True
    x = await party.input(torch.linspace(-2, 2, 12).reshape(3, 4) if party.id == 0 else None, src=0)
    w = await party.input(torch.linspace(-1, 1, 8).reshape(4, 2) if party.id == 1 else None, src=1)
    stream = MaterialStream(party, range(1, iterations + 1), window) if window is not None else None
    outs = []
    for i in range(1, iterations + 1):
        with (stream.iteration(i) if stream else keyed_scope(i)):
            outs.append(await (await iteration(party, x, w, change if i == change_at else "")).reveal())
    return outs, party.stats.offline.as_dict(), stream and stream.peak_held


def run(*args, limits: DealerLimits | None = None):
    async def both():
        dealer = LocalDealer(*SEEDS, limits)
        ends = pair()
        parties = [Party(i, ends[i], timeout=20, dealer=DealerClient(i, SEEDS[i], dealer)) for i in (0, 1)]
        return await asyncio.gather(*(p.run(program, *args) for p in parties))

    return asyncio.run(both())


def test_streamed_material_gives_the_same_bits_as_material_on_demand():
    (on_demand, stats, _), _ = run(6, None)
    for window in (1, 3):
        (streamed, streamed_stats, peak), _ = run(6, window)
        assert all(torch.equal(a, b) for a, b in zip(on_demand, streamed, strict=True))
        per_iteration = stats["requests"] // 6
        # the plan repeats from the first iteration: known after 2, streamed for 3 to 6
        assert streamed_stats["ahead"] == 4 * per_iteration
        assert streamed_stats["on_demand"] == 2 * per_iteration and streamed_stats["unused"] == 0
        assert streamed_stats["requests"] == stats["requests"]
        assert peak == min(window + 1, 4)  # the running iteration and at most `window` ahead
        assert streamed_stats["waited"] >= 0.0 and stats["waited"] == 0.0


def test_no_window_streams_nothing():
    (_, stats, peak), _ = run(5, 0)
    assert stats["ahead"] == 0 and peak == 0


def test_requests_outside_the_plan_are_served_and_unused_ones_dropped():
    (reference, _, _), _ = run(6, None)
    (outs, stats, _), _ = run(6, 1, 5, "extra")
    assert all(torch.equal(a, b) for a, b in zip(reference[:4], outs[:4], strict=True))
    assert torch.allclose(outs[4], reference[4] ** 2, atol=1e-3)
    assert stats["on_demand"] > 0 and stats["unused"] == 0
    (outs, stats, _), _ = run(6, 1, 5, "skip")
    assert stats["unused"] > 0  # the square's material, streamed for iteration 5 and not asked for
    assert all(torch.equal(a, b) for a, b in zip(reference[5:], outs[5:], strict=True))


@pytest.mark.parametrize(("window", "streamed"), [(1, [3, 4, 5, 6, 8, 9]), (2, [3, 4, 5, 6, 7, 8, 9])])
def test_a_stream_goes_on_after_an_iteration_unlike_the_others(window, streamed):
    """Iteration 5 asks for more than the plan: 6 was fetched ahead before (and 7 too with a
    window of 2), then 6's plan differs from 5's, so nothing more streams until 7's and 6's
    agree; every iteration's bits are those of material on demand."""
    (reference, _, _), _ = run(9, None, 5, "extra")
    (outs, stats, _), _ = run(9, window, 5, "extra")
    assert all(torch.equal(a, b) for a, b in zip(reference, outs, strict=True))
    per_iteration = (stats["requests"] - 2) // 9  # the extra product's own two requests
    assert stats["ahead"] == len(streamed) * per_iteration and stats["unused"] == 0


def test_a_step_that_differs_from_the_streamed_plan_is_a_clear_error():
    with pytest.raises(DealerError, match="not what the plan streamed ahead"):
        run(6, 1, 5, "shape")


def test_a_refused_stream_ends_the_program_with_the_refusal():
    """The dealer's limit lets the iterations on demand through, not the first streamed one:
    the refusal reaches the program when it needs that material (no hang, no other error)."""
    dealer = LocalDealer(*SEEDS)
    asyncio.run(_admitted(dealer, 3))
    with pytest.raises(DealerRefused):
        run(6, 1, limits=DealerLimits(job_bytes=dealer.admission.material_bytes + 1))


async def _admitted(dealer: LocalDealer, iterations: int) -> None:
    ends = pair()
    parties = [Party(i, ends[i], timeout=20, dealer=DealerClient(i, SEEDS[i], dealer)) for i in (0, 1)]
    await asyncio.gather(*(p.run(program, iterations, None) for p in parties))


async def paced_program(party, iterations: int, window_bytes: int, chunk_bytes: int):
    party.prefetched = True
    x = await party.input(torch.linspace(-2, 2, 12).reshape(3, 4) if party.id == 0 else None, src=0)
    w = await party.input(torch.linspace(-1, 1, 8).reshape(4, 2) if party.id == 1 else None, src=1)
    stream = MaterialStream(party, range(1, iterations + 1), 1, window_bytes=window_bytes, chunk_bytes=chunk_bytes)
    outs = []
    for i in range(1, iterations + 1):
        with stream.iteration(i):
            outs.append(await (await iteration(party, x, w)).reveal())
    sizes = [held_bytes(r) for r in stream._plan]
    return outs, party.stats.offline.as_dict(), stream.peak_bytes, (max(sizes), sum(sizes))


def run_paced(*args):
    async def both():
        dealer = LocalDealer(*SEEDS)
        ends = pair()
        parties = [Party(i, ends[i], timeout=20, dealer=DealerClient(i, SEEDS[i], dealer)) for i in (0, 1)]
        return await asyncio.gather(*(p.run(paced_program, *args) for p in parties))

    return asyncio.run(both())


@pytest.mark.parametrize(("window_bytes", "chunk_bytes"), [(1, 1), (4096, 1024), (1 << 30, 1 << 20)])
def test_a_byte_window_bounds_the_material_ahead_and_keeps_the_bits(window_bytes, chunk_bytes):
    """Batches start as the program takes material: at most the window ahead (plus the one
    batch a step needs at once), the same bits as on demand, nothing fetched twice."""
    (reference, stats, _), _ = run(6, None)
    for outs, paced_stats, peak, (largest, whole) in run_paced(6, window_bytes, chunk_bytes):
        assert all(torch.equal(a, b) for a, b in zip(reference, outs, strict=True))
        per_iteration = stats["requests"] // 6
        assert paced_stats["ahead"] == 4 * per_iteration and paced_stats["unused"] == 0
        assert paced_stats["on_demand"] == 2 * per_iteration
        if window_bytes < whole:  # a batch starts when it fits the window, or when none is out
            assert peak <= window_bytes + chunk_bytes + largest and peak < whole
        else:  # a window wider than an iteration: the running one's and the next one's, as before
            assert peak == 2 * whole


def test_a_stream_refuses_an_empty_byte_window():
    with pytest.raises(ValueError, match="window_bytes and chunk_bytes"):
        MaterialStream(SimpleNamespace(dealer=SimpleNamespace()), [1], window_bytes=0)
