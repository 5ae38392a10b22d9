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
    r0, _ = mpcrt.run_local(arith.product_program, small, 1, 3, frac_bits=frac_bits)
    # within one unit of 2^-frac_bits: products made at another scale would miss by 2^|f - 16| units
    assert 0 < r0["max_error_ulp"] <= 1.0


def test_nonlinear_probe_runs_at_the_asked_scale():
    (relu,) = [w for w in nonlinear.WORKLOADS if w.name.startswith("relu 1e5")]
    _, r0, _ = nonlinear._probe_once(relu, "tree", (256,), frac_bits=20)
    # exact on the inputs as held at 2^-20: inputs held at 2^-16 would be off by up to 2^-17
    assert r0["max_abs_error"] == 0.0
