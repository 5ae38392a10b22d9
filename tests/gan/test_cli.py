"""The lpgan command, run as users run it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def lpgan(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_certs(tmp_path):
    out = lpgan("certs", str(tmp_path / "c"), "--names", "party0", "party1")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "ca.key", "ca.pem", "party0.key", "party0.pem", "party1.key", "party1.pem"]


def test_demo_runs_two_processes_over_tls():
    out = lpgan("demo", "-n", "1000")
    assert out.returncode == 0, out.stderr
    assert "mutual TLS" in out.stdout and "max error against plaintext" in out.stdout


def test_usage_errors_exit_non_zero():
    out = lpgan("train")
    assert out.returncode == 2 and "invalid choice" in out.stderr
