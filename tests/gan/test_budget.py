"""The bound on a GAN job's dealer material: above what an honest job asks, within a few times it."""

from __future__ import annotations

import pytest

from gan import budget
from gan.train import TrainConfig

PROTOCOL = {"frac_bits": 16, "comparison": "auto", "truncation": "dealer", "network": None}


@pytest.mark.parametrize("batch", [3, 16])
def test_an_honest_iteration_stays_within_the_bound_and_the_bound_is_not_loose(batch):
    cfg = TrainConfig(preset="small", batch_size=batch, iterations=5, samples=8)
    honest = budget._plan_bytes(budget._one_iteration, cfg, batch, protocol=PROTOCOL)
    per_iteration = budget.training_limits(cfg, PROTOCOL, first=4).job_bytes - budget.synthesis_bytes(
        "small", 8, 8, PROTOCOL)
    assert honest <= per_iteration <= 10 * honest


def test_the_bound_counts_the_iterations_left_and_the_samples():
    cfg = TrainConfig(preset="small", batch_size=4, iterations=10, samples=8)
    samples = budget.synthesis_bytes("small", 8, 8, PROTOCOL)
    whole, resumed = (budget.training_limits(cfg, PROTOCOL, first).job_bytes - samples for first in (0, 6))
    assert whole * 4 == resumed * 10 and samples > 0


def test_synthesis_in_batches_is_bounded_by_its_honest_plan():
    honest = sum(budget._plan_bytes(budget._one_synthesis, "small", b, protocol=PROTOCOL) for b in (4, 4, 2))
    bound = budget.synthesis_bytes("small", 10, 4, PROTOCOL)
    assert honest <= bound <= 10 * honest


def test_the_dry_runs_are_kept_on_disk_and_a_bad_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LPGAN_CACHE", str(tmp_path))
    measured: list[str] = []
    budget._synthesis_points.cache_clear()
    first = budget.synthesis_bytes("small", 4, 4, PROTOCOL, measured.append)
    assert len(measured) == 1 and "dry run" in measured[0] and len(list(tmp_path.glob("budget-*.json"))) == 1

    record_plan = budget.record_plan

    def no_dry_run(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(budget, "record_plan", no_dry_run)
    budget._synthesis_points.cache_clear()  # as a new process: from the disk
    assert budget.synthesis_bytes("small", 4, 4, PROTOCOL, measured.append) == first and len(measured) == 1

    for path in tmp_path.glob("budget-*.json"):
        path.write_text("[1, ")
    monkeypatch.setattr(budget, "record_plan", record_plan)
    budget._synthesis_points.cache_clear()
    assert budget.synthesis_bytes("small", 4, 4, PROTOCOL, measured.append) == first and len(measured) == 2
    budget._synthesis_points.cache_clear()
