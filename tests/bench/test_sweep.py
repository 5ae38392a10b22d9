"""The network sweep: its model and its plot."""

from __future__ import annotations

import os

import pytest

from bench import gan as bench_gan
from bench import sweep


def result(seconds: float, rounds: int, mb: float) -> bench_gan.Result:
    return bench_gan.Result("it", "loopback", [seconds], rounds, mb, mb, 0.0, 0.0, 0.01, 1.0)


def test_the_model_adds_latency_per_round_and_transfer_time():
    r = result(1.0, 100, 50.0)
    assert sweep.modelled(r, 0.04, 400e6) == pytest.approx(1.0 + 100 * 0.02 + 1.0)
    assert sweep.modelled(r, 0.0, 1e15) == pytest.approx(1.0)


def test_the_plot_draws_every_method(tmp_path):
    measured = {"tree": result(1.0, 400, 100.0), "dcf": result(3.0, 60, 20.0)}
    png = sweep.plot(measured, {"dcf": result(4.0, 60, 20.0)}, str(tmp_path / "s.png"), "tiny")
    assert os.path.getsize(png) > 1000
