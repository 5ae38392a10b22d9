"""Every example runs, at a tiny size, so none of them rots."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # processes=True pickles the program by its module
    spec.loader.exec_module(module)
    return module


def test_private_stats_reveals_only_the_three_answers(tmp_path, capsys):
    stats = load("private_stats")
    (tmp_path / "a.txt").write_text("10\n20\n30.5\n")
    (tmp_path / "b.txt").write_text("5\n-2\n")
    assert stats.main([str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--memory"]) == 0
    out = capsys.readouterr().out
    assert "larger: True" in out and "joint mean 12.700" in out and "variance 130.5" in out


def test_private_stats_in_two_processes(tmp_path):
    (tmp_path / "a.txt").write_text("1\n2\n")
    (tmp_path / "b.txt").write_text("3\n4\n5\n")
    done = subprocess.run([sys.executable, str(EXAMPLES / "private_stats.py"), str(tmp_path / "a.txt"),
                           str(tmp_path / "b.txt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "larger: False" in done.stdout and "joint mean 3.000" in done.stdout


def test_the_recording_transport_records_every_frame(tmp_path):
    rec = load("recording_transport")
    import asyncio

    result, frames = asyncio.run(rec.run(tmp_path / "frames.bin"))
    assert result.tolist() == [3.0, 0.0, 0.0]
    kinds = [k for _, k, _ in frames]
    assert kinds.count("hello") == 2 and kinds.count("bye") == 2 and kinds.count("data") > 10
    assert any("mul" in labels for _, _, labels in frames)


@pytest.mark.parametrize("network", ["secureml", "cryptonets", "minionn"])
def test_each_comparison_network_trains_on_shares_like_its_twin(network):
    nets = load("comparison_networks")
    r = nets.run(network, train_n=256, test_n=200, epochs=1, batch=64, lr=nets.LEARNING_RATES[network])
    assert r["batches"] == 4
    assert abs(r["secure_accuracy"] - r["plaintext_accuracy"]) <= 0.03
