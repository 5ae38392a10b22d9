"""The GAN benchmark's program and its partial offline plan, at a tiny size."""

from __future__ import annotations

import os

import mpcrt
from bench import gan as bench_gan


def test_the_timed_repeats_run_on_prefetched_material_only():
    w = bench_gan.Workload("tiny", "small", 2, "d_forward", repeats=1, prefetch="timed")
    plan = bench_gan.timed_plan(w, None, seed=1)
    assert plan and all(r.kind for r in plan)
    cores = os.sched_getaffinity(0)
    try:  # the program pins its party to a core: in one process, give this one its cores back
        r0, r1 = mpcrt.run_local(bench_gan.program, w, 1, plan=plan, timeout=60)
    finally:
        os.sched_setaffinity(0, cores)
    assert len(r0["times"]) == len(r1["times"]) == 1
    rounds, sent, _, waited = r1["deltas"][0]
    assert rounds > 0 and sent > 0
    # the timed forward pass found all its material prefetched: it waited for no dealer
    assert waited == 0.0


def test_the_streamed_workload_times_iterations_made_ahead_end_to_end():
    w = bench_gan.Workload("tiny streamed", "small", 2, "iteration", repeats=1, prefetch="stream",
                           warmup=bench_gan.STREAM_WARMUP)
    assert w.end_to_end and not bench_gan.Workload("x", "small", 2, "iteration").end_to_end
    cores = os.sched_getaffinity(0)
    try:
        r0, r1 = mpcrt.run_local(bench_gan.program, w, 1, timeout=60)
    finally:
        os.sched_setaffinity(0, cores)
    assert len(r0["times"]) == len(r1["times"]) == 1 and r1["peak_rss"] > 0
    # the plan repeats from the second iteration: the stream ran ahead for the timed fourth
    assert r1["deltas"][0][0] > 0


def test_the_table_lists_every_result():
    result = bench_gan.Result("SD", "loopback", [1.0, 3.0], 10, 1.0, 1.0, (2.0, 7.0), 0.0, 0.01, 5.0)
    table = bench_gan.table([result])
    assert "SD" in table and "200x" in table and "2.00" in table and "online" in table and "2/7" in table
    streamed = bench_gan.Result("SD", "loopback", [1.0], 10, 1.0, 1.0, (2.0, 2.0), 0.0, 0.01, 5.0, True, 1.25)
    assert "end to end" in bench_gan.table([streamed]) and "1.2" in bench_gan.table([streamed])


async def _synthesis(party):
    import torch

    import gan
    from gan.models import PRESETS, generator

    g = await gan.secure(generator(PRESETS["small"]), party, src=0)
    z = await party.input(torch.randn(2, PRESETS["small"].nz, 1, 1) if party.id == 0 else None, src=0)
    await bench_gan._synthesize(g, z)
    return party.stats.op("reveal").bytes_sent, party.stats.op("reveal").bytes_received, g.training


def test_synthesis_reveals_the_images_to_party_0_alone():
    (sent0, received0, training0), (sent1, received1, _) = mpcrt.run_local(_synthesis, timeout=60)
    images = 2 * 1 * 16 * 16 * 8  # 2 images of 1 x 16 x 16, 8 bytes each element
    assert (sent0, received0) == (0, images) and (sent1, received1) == (images, 0)
    assert training0  # back in training mode afterwards
    w = bench_gan.Workload("tiny synthesis", "small", 2, "synthesis")
    assert bench_gan.plaintext_seconds(w, repeats=1) > 0
