"""The lpgan command, run as users run it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys


def lpgan(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_certs(tmp_path):
    out = lpgan("certs", str(tmp_path / "c"), "--names", "party0", "party1")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "ca.key", "ca.pem", "party0.key", "party0.pem", "party1.key", "party1.pem"]


def test_demo_trains_and_synthesizes_in_two_processes_over_tls(tmp_path):
    out = lpgan("demo", "--iterations", "2", "--samples", "4", "--out", str(tmp_path / "demo"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "mutual TLS" in out.stdout and "iteration    2/2" in out.stdout
    for name in ("samples.png", "samples_plaintext_twin.png", "curves.png", "metrics.json", "generator.pt",
                 "discriminator.pt"):
        assert (tmp_path / "demo" / name).is_file(), name
    quality = json.loads((tmp_path / "demo" / "metrics.json").read_text())["sample_quality"]
    for who in ("secure", "plaintext_twin"):
        assert quality[who]["images"] == 1000 and sum(quality[who]["class_histogram"]) == 1000
        assert quality[who]["frechet_distance"] > 0
    assert "Frechet distance" in out.stdout


def test_usage_errors_exit_non_zero():
    out = lpgan("train")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bench_runs_the_suites_of_bench():
    out = lpgan("bench", "gan", "--help")
    assert out.returncode == 0 and "--network" in out.stdout
    out = lpgan("bench", "nosuch")
    assert out.returncode == 2 and "invalid choice" in out.stderr
