"""CrypTen side by side: the workloads both sides run, the wan model, the report's verdicts."""

from __future__ import annotations

import os

import pytest

import mpcrt
from bench import crypten_side
from bench.crypten_runner import WORKLOADS


def test_every_crypten_workload_has_ours():
    from bench import networks

    for name in WORKLOADS:
        assert (name == "D step b16 32x32" or name in crypten_side.ARITH or name in crypten_side.NONLINEAR
                or name in networks.NAMES), name
    assert len(networks.NAMES) == 9


def test_crypten_wan_time_is_its_loopback_time_plus_latency_and_transfer():
    c = {"seconds": 0.5, "rounds": 100, "mb": 100.0}
    # 100 rounds x 20 ms one way + 50 MB sent (CrypTen counts 100: sent + received) at 400 Mbit/s (1 s)
    assert crypten_side.crypten_wan(c) == pytest.approx(0.5 + 2.0 + 1.0)


def test_the_report_gives_ratios_and_verdicts():
    crypten = {"relu 1e5": {"seconds": 0.2, "rounds": 9, "mb": 46.0, "max_error": 1e-5}}
    mine = {("relu 1e5", "loopback"): {"seconds": 0.02, "rounds": 9, "mb": 6.3, "offline_mb": 4.0, "max_error": 0.0},
            ("sigmoid 1e5", "loopback"): {"error": "not measured"}}
    text = crypten_side.report(crypten, mine, ("loopback",))
    assert "0.100" in text and "<= 0.20 PASS" in text and "not measured" in text


def test_our_d_step_runs_on_shares():
    cores = os.sched_getaffinity(0)
    try:
        r0, r1 = mpcrt.run_local(crypten_side.d_step_program, 0, 1, timeout=120)
    finally:
        os.sched_setaffinity(0, cores)
    # forward 26 (conv-ReLU fused, each LeakyReLU's sign 5 rounds, batch norm 9: its 32 channels'
    # range conversion by one DCF opening, then the quartic, gamma / std made before the
    # output's products (its 32,768 elements made on demand: ops.policy.GAIN_FUSION), the
    # running statistics in its round, its input never opened, the convolution's
    # truncation in its means' round;
    # sigmoid 3: its 16 logits by the DCF, the last convolution's truncation in its first
    # round), the BCE gradient 0 (its 1/16 read into the scale, truncated by the linear
    # layer's backward), backward 11 (batch norm's 5: its output kept masked by the ReLU
    # after it), SGD 1;
    # CrypTen's D step takes 226 (docs/BENCHMARKS.md): a guard against rounds creeping back
    assert r0["rounds"] == r1["rounds"] == [38] and r0["moved"][0] > 0
