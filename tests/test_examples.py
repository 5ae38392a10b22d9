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


def test_private_stats_on_two_server_processes(tmp_path):
    (tmp_path / "a.txt").write_text("10\n20\n30.5\n")
    (tmp_path / "b.txt").write_text("5\n-2\n")
    done = subprocess.run([sys.executable, str(EXAMPLES / "private_stats.py"), str(tmp_path / "a.txt"),
                           str(tmp_path / "b.txt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "larger: True" in done.stdout and "joint mean 12.700" in done.stdout and "variance 130.5" in done.stdout
    assert "(of 5 values)" in done.stdout


def test_the_recording_transport_in_two_processes_over_tls(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "recording_transport.py"), "--out", str(tmp_path / "f")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "relu(x * y) = [3.0, 0.0, 0.0]" in done.stdout
    rec = load("recording_transport")
    mine, theirs = rec.replay(tmp_path / "f.party0.bin"), rec.replay(tmp_path / "f.party1.bin")
    # what one party sent, the other received, frame for frame
    assert [f[1:] for f in mine if f[0] == ">"] == [f[1:] for f in theirs if f[0] == "<"]
    assert len(mine) > 10  # hello, each round of the product, the ReLU and the reveal, bye


def test_the_recording_transport_records_every_frame(tmp_path):
    rec = load("recording_transport")
    import asyncio

    result, frames = asyncio.run(rec.run(tmp_path / "frames.bin"))
    assert result.tolist() == [3.0, 0.0, 0.0]
    kinds = [k for _, k, _ in frames]
    assert kinds.count("hello") == 2 and kinds.count("bye") == 2 and kinds.count("data") > 6
    assert any("mul" in labels for _, _, labels in frames)


@pytest.mark.parametrize("network", ["secureml", "cryptonets", "minionn"])
def test_each_comparison_network_trains_on_shares_like_its_twin(network):
    nets = load("comparison_networks")
    r = nets.run(network, train_n=256, test_n=200, epochs=1, batch=64, lr=nets.LEARNING_RATES[network],
                 in_process=True)
    assert r["batches"] == 4
    assert abs(r["secure_accuracy"] - r["plaintext_accuracy"]) <= 0.03


def test_a_comparison_network_on_two_server_processes():
    done = subprocess.run([sys.executable, str(EXAMPLES / "comparison_networks.py"), "--network", "minionn",
                           "--train", "128", "--test", "100", "--epochs", "1"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "minionn" in done.stdout and "2 secure SGD steps" in done.stdout


def test_the_recording_transport_as_two_servers_and_a_coordinator(tmp_path):
    """The two-machine form (serve on each host, ask from the coordinator), here on loopback."""
    from transports import generate_certificates

    generate_certificates(tmp_path / "certs")
    servers_module = load("_servers")
    rec_args = ["--out", str(tmp_path / "rec")]
    script = str(EXAMPLES / "recording_transport.py")
    first, port0 = servers_module._start(script, 0, "127.0.0.1:0", "127.0.0.1:1", tmp_path / "certs", rec_args)
    second, port1 = servers_module._start(script, 1, "127.0.0.1:0", f"127.0.0.1:{port0}", tmp_path / "certs", rec_args)
    servers, ports = [first, second], [port0, port1]
    try:
        done = subprocess.run([sys.executable, str(EXAMPLES / "recording_transport.py"), "ask",
                               f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", "--certs", str(tmp_path / "certs")],
                              capture_output=True, text=True, timeout=120)
    finally:
        for p in servers:
            p.terminate()
            p.wait(10)
    assert done.returncode == 0, done.stderr
    assert "relu(x * y) = [3.0, 0.0, 0.0]" in done.stdout
    rec = load("recording_transport")
    mine, theirs = rec.replay(tmp_path / "rec.party0.bin"), rec.replay(tmp_path / "rec.party1.bin")
    assert [f[1:] for f in mine if f[0] == ">"] == [f[1:] for f in theirs if f[0] == "<"]

