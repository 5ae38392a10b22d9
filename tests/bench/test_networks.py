"""The comparison networks' benchmark: its program on shares, at a tiny size, and its report."""

from __future__ import annotations

import os

import mpcrt
from bench import networks


def test_inference_and_a_training_step_run_on_shares():
    cores = os.sched_getaffinity(0)
    try:
        for name in ("minionn inference b1", "cryptonets train step b64"):
            r0, r1 = mpcrt.run_local(networks.program, name, 0, 1, timeout=120)
            assert r0["rounds"] == r1["rounds"] and r0["rounds"][0] > 0 and r0["moved"][0] > 0
    finally:
        os.sched_setaffinity(0, cores)


def test_the_report_gives_time_per_image_and_ratios():
    mine = {("secureml inference b64", "loopback"): {"seconds": 0.64, "rounds": 5, "mb": 1.0, "offline_mb": 1.0}}
    crypten = {"secureml inference b64": {"seconds": 1.28, "rounds": 5, "mb": 2.0}}
    text = networks.report(crypten, mine)
    assert "10.00" in text and "20.00" in text and "0.500" in text
