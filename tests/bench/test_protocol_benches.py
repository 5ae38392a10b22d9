"""The protocol benchmarks (bench.arith, bench.nonlinear) take the fixed-point scale as a parameter."""

from __future__ import annotations

import dataclasses

import pytest

import mpcrt
from bench import arith, nonlinear


@pytest.mark.parametrize("frac_bits", [12, 20])
def test_products_run_and_are_judged_at_the_asked_scale(frac_bits):
    (mul,) = [w for w in arith.WORKLOADS if w.name == "mul 1e5"]
    small = dataclasses.replace(mul, x_shape=(500,), y_shape=(500,))
    r0, r1 = mpcrt.run_local(arith.product_program, small, 1, 3, frac_bits=frac_bits)
    assert r0["frac_bits"] == r1["frac_bits"] == frac_bits
    assert 0 < r0["max_error_ulp"] <= 1.0  # within one unit of 2^-frac_bits


def test_the_measured_run_gets_the_scale_too():
    (mul,) = [w for w in arith.WORKLOADS if w.name == "mul 1e5"]
    result = arith.measure(dataclasses.replace(mul, x_shape=(300,), y_shape=(300,)), 1, frac_bits=20)
    assert result.extra["frac_bits"] == 20 and result.max_error_ulp <= 1.0


def test_the_measured_nonlinear_run_gets_the_scale_too():
    (relu,) = [w for w in nonlinear.WORKLOADS if w.name.startswith("relu 1e5")]
    tiny = dataclasses.replace(relu, shape=(500,))
    result = nonlinear.measure(tiny, "tree", "loopback", True, nonlinear.Limits(budget_s=30.0), frac_bits=20)
    assert result.ok and result.extra["frac_bits"] == 20 and result.max_abs_error == 0.0


def test_nonlinear_probe_runs_at_the_asked_scale():
    (relu,) = [w for w in nonlinear.WORKLOADS if w.name.startswith("relu 1e5")]
    _, r0, r1 = nonlinear._probe_once(relu, "tree", (256,), frac_bits=20)
    assert r0["frac_bits"] == r1["frac_bits"] == 20
    assert r0["max_abs_error"] == 0.0  # exact on the inputs as held at 2^-20


def test_inv_sqrt_with_its_range_declared_costs_less_at_the_same_accuracy():
    from bench import crypten_side

    op, shape, kind = crypten_side.NONLINEAR[crypten_side.DECLARED]
    default = nonlinear.Workload("default range", op, shape, kind, relative=True)
    declared = dataclasses.replace(default, exponents=crypten_side.DECLARED_EXPONENTS)
    (_, wide, _), (_, narrow, _) = (nonlinear._probe_once(w, "tree", (256,)) for w in (default, declared))
    assert sum(narrow["bytes_sent"]) < sum(wide["bytes_sent"]) / 2  # 8 thresholds instead of 29
    assert narrow["max_rel_error"] <= 1e-3 and wide["max_rel_error"] <= 1e-3


def test_a_network_is_loopback_a_preset_or_a_custom_link():
    from bench.transport import network_spec

    assert network_spec("loopback") is None and network_spec("mobile") == "mobile"
    assert network_spec("100/20") == {"bandwidth_mbps": 100.0, "rtt_ms": 20.0}
    assert network_spec("2.5/80ms") == {"bandwidth_mbps": 2.5, "rtt_ms": 80.0}
    for bad in ("fast", "100", "100/", "/20", "-1/20"):
        with pytest.raises(ValueError, match="MBPS/RTT"):
            network_spec(bad)


def test_protocols_run_over_a_custom_link():
    (relu,) = [w for w in nonlinear.WORKLOADS if w.name.startswith("relu 1e5")]
    tiny = dataclasses.replace(relu, shape=(200,))
    result = nonlinear.measure(tiny, "tree", "1000/10", True, nonlinear.Limits(budget_s=30.0))
    # 6 rounds over a 10 ms round trip: at least 6 one-way delays of 5 ms
    assert result.ok and result.rounds == 6 and result.online_s >= 0.030
    # and again with the dealer on demand: every request of party 1 asked when the op needed it
    offline = result.extra["end_to_end_offline"][1]
    assert result.end_to_end_s >= 0.030 and offline["on_demand"] == offline["requests"] > 0
