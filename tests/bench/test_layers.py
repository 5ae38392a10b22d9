"""The per-layer benchmark: every layer of both networks, forward and backward, at a tiny size."""

from __future__ import annotations

import os

import mpcrt
from bench import layers


def test_every_layer_is_measured_in_both_directions(tmp_path):
    cores = os.sched_getaffinity(0)
    try:  # the program pins its party to a core: in one process, give this one its cores back
        p0, p1 = mpcrt.run_local(layers.program, "small", 2, 0, 2, timeout=120)
    finally:
        os.sched_setaffinity(0, cores)
    assert len(p0) == len(p1) == 2  # two timed passes
    r0, r1 = p0[0], p1[0]
    assert [r["rounds"] for r in p0[1]] == [r["rounds"] for r in r0]
    merged = layers.median_rows(p0, p1)
    assert len(merged) == len(r0) and all(m["seconds"] >= 0 for m in merged)
    forward = [r for r in r0 if r["direction"] == "forward"]
    backward = [r for r in r0 if r["direction"] == "backward"]
    # G has 8 layers and D 8; D's final Sigmoid is folded into the loss gradient, so 15 backward
    assert len(forward) == 16 and len(backward) == 15
    assert [r["layer"] for r in forward[:2]] == ["0:ConvTranspose2d", "1:BatchNorm2d"]
    # a ReLU's backward is local: its bit was opened in the forward, and the gradient from the
    # transposed convolution after it is a truncation's output (masked)
    local = [(r["direction"], r["layer"]) for r in r0 if r["rounds"] == 0 and "Flatten" not in r["layer"]]
    assert local == [("backward", "5:ReLU"), ("backward", "2:ReLU")]
    assert [r["rounds"] for r in r0] == [r["rounds"] for r in r1]
    text = layers.table(r0)
    assert "total" in text and "D 3:BatchNorm2d" in text
    png = layers.plot(r0, str(tmp_path / "layers.png"), "tiny")
    assert os.path.getsize(png) > 1000
