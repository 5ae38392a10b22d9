"""The lpgan command, run as users run it: servers and owner in subprocesses, over TLS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from transports import generate_certificates


def lpgan(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """Two `lpgan serve` processes on loopback, on ports the system picked (no race for them)."""

    def __init__(self, folder: Path, certs: Path, state: tuple[Path, Path] | None = None) -> None:
        self.folder, self.certs = folder, certs
        self.state = state or (folder / "state0", folder / "state1")
        self.starts = [0, 0]
        self.procs: list[subprocess.Popen | None] = [None, None]
        self.ports = (0, 0)
        port0 = self._start(0, 0, 1)
        self.ports = (port0, self._start(1, 0, port0))

    def _start(self, i: int, port: int, peer: int) -> int:
        from gan.demo import serve_process, wait_listening

        self.starts[i] += 1
        log = self.log_path(i)
        self.procs[i] = serve_process(i, f"127.0.0.1:{port}", f"127.0.0.1:{peer}", self.certs, self.state[i], log)
        return wait_listening(self.procs[i], log)

    def log_path(self, i: int) -> Path:
        return self.folder / f"serve{i}-{self.starts[i]}.log"

    def start(self, i: int) -> None:
        """Start party i again, on its port."""
        self._start(i, self.ports[i], self.ports[0] if i == 1 else 1)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.kill()
        proc.wait(10)

    def log(self, i: int) -> str:
        return self.log_path(i).read_text()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()


def job_file(folder: Path, ports: tuple[int, int], certs: Path, out: str, iterations: int = 3,
             checkpoint_every: int = 1, extra: str = "") -> Path:
    path = folder / f"{out}.toml"
    path.write_text(f"""\
name = "{out}"
out = "{out}"
[servers]
party0 = "127.0.0.1:{ports[0]}"
party1 = "127.0.0.1:{ports[1]}"
certs = "{certs}"
connect_timeout = 20
timeout = 30
[train]
iterations = {iterations}
batch_size = 4
samples = 4
checkpoint_every = {checkpoint_every}
twin = false
[synthesize]
generator = "{out}/generator.pt"
count = 6
batch_size = 4
{extra}""")
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    generate_certificates(d)
    return d


@pytest.fixture(scope="module")
def servers(tmp_path_factory, certs):
    running = Servers(tmp_path_factory.mktemp("servers"), certs)
    yield running
    running.stop()


def state_dict(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_certs(tmp_path):
    out = lpgan("certs", str(tmp_path / "c"), "--names", "party0", "party1")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "ca.key", "ca.pem", "party0.key", "party0.pem", "party1.key", "party1.pem"]


def test_demo_runs_two_servers_and_the_owner_over_tls(tmp_path):
    out = lpgan("demo", "--iterations", "2", "--batch-size", "4", "--samples", "4", "--out", str(tmp_path / "d"),
                timeout=300)
    assert out.returncode == 0, out.stderr
    assert "mutual TLS" in out.stdout and "Frechet distance" in out.stdout
    folder = tmp_path / "d"
    for name in ("samples.png", "samples_plaintext_twin.png", "curves.png", "metrics.json", "generator.pt",
                 "discriminator.pt", "synthesized.png", "job.toml", "server0.log", "server1.log",
                 "server0-process.log", "server1-process.log"):
        assert (folder / name).is_file(), name
    quality = json.loads((folder / "metrics.json").read_text())["sample_quality"]
    for who in ("secure", "plaintext_twin"):
        assert quality[who]["images"] == 1000 and sum(quality[who]["class_histogram"]) == 1000
    assert "done" in (folder / "server1-process.log").read_text()


def test_train_then_synthesize(tmp_path, servers, certs):
    job = job_file(tmp_path, servers.ports, certs, "run", iterations=2)
    out = lpgan("train", str(job))
    assert out.returncode == 0, out.stderr
    assert "server 1" in out.stdout and "rounds" in out.stdout
    for name in ("generator.pt", "discriminator.pt", "samples.png", "curves.png", "metrics.json", "checkpoint.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["iteration"] == 2
    out = lpgan("synthesize", str(job), "--dealer-workers", "1")  # the material made by a worker process
    assert out.returncode == 0, out.stderr
    images = torch.load(tmp_path / "run" / "synthesized.pt")
    assert images.shape == (6, 1, 16, 16) and float(images.abs().max()) <= 1.0 + 1e-3


def test_a_killed_server_is_named_and_resume_ends_near_an_uninterrupted_run(tmp_path, certs):
    servers = Servers(tmp_path, certs)
    try:
        straight = job_file(tmp_path, servers.ports, certs, "straight", iterations=6)
        assert lpgan("train", str(straight)).returncode == 0
        job = job_file(tmp_path, servers.ports, certs, "broken", iterations=6)
        owner = subprocess.Popen([sys.executable, "-m", "gan.cli", "train", str(job)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        record = tmp_path / "broken" / "checkpoint.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (record.exists() and
                                                   json.loads(record.read_text())["iteration"] >= 2):
            time.sleep(0.1)
        servers.kill(1)
        _, stderr = owner.communicate(timeout=60)
        assert owner.returncode == 1
        saved = json.loads(record.read_text())["iteration"]
        assert "server 1 (127.0.0.1" in stderr and f"iteration {saved}" in stderr and "--resume" in stderr, stderr
        assert saved < 6
        servers.start(1)
        out = lpgan("train", str(job), "--resume")
        assert out.returncode == 0, out.stderr
        assert f"resuming at iteration {saved}" in out.stdout
        # the same inputs (the owner's secret and the job's seed), fresh pads per run: the runs
        # agree up to the dealer truncation's rounding, which depends on the masks
        for model in ("generator.pt", "discriminator.pt"):
            a, b = (state_dict(tmp_path / run / model) for run in ("straight", "broken"))
            assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-2, model
    finally:
        servers.stop()


def test_a_server_that_is_not_up_gets_a_clear_error(tmp_path, certs):
    ports = (free_port(), free_port())
    job = job_file(tmp_path, ports, certs, "nobody", extra="")
    job.write_text(job.read_text().replace("connect_timeout = 20", "connect_timeout = 1"))
    out = lpgan("train", str(job))
    assert out.returncode == 1
    assert "is `lpgan serve --party" in out.stderr and "Traceback" not in out.stderr
    assert "checkpoint" not in out.stderr  # nothing ran: nothing to resume, nothing to say of it


def test_a_wrong_certificate_is_refused(tmp_path, servers):
    other = tmp_path / "other-ca"
    generate_certificates(other)
    out = lpgan("train", str(job_file(tmp_path, servers.ports, other, "stranger")))
    assert out.returncode == 1 and "certificate" in out.stderr and "Traceback" not in out.stderr


def test_a_second_job_while_one_runs_is_refused(tmp_path, servers, certs):
    first_job = job_file(tmp_path, servers.ports, certs, "first", iterations=4)
    first_job.write_text(first_job.read_text().replace("timeout = 30", "timeout = 300"))
    first = subprocess.Popen([sys.executable, "-m", "gan.cli", "train", str(first_job)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "job 'first' (session" not in servers.log(0):
            time.sleep(0.1)
        # the first owner is held still, so its job runs however long the second takes to start
        first.send_signal(signal.SIGSTOP)
        stopped = True
        out = lpgan("train", str(job_file(tmp_path, servers.ports, certs, "second")))
        assert out.returncode == 1 and "busy with job 'first'" in out.stderr
        assert "checkpoint" not in out.stderr, out.stderr  # a refusal: no advice about checkpoints
    finally:
        if stopped:
            first.send_signal(signal.SIGCONT)
        first.communicate(timeout=120)
    assert first.returncode == 0


def test_a_port_in_use_is_a_clear_error(tmp_path, certs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = lpgan("serve", "--party", "0", "--listen", f"127.0.0.1:{port}", "--peer", "127.0.0.1:1",
                    "--certs", str(certs), timeout=60)
    assert out.returncode == 1 and "cannot listen" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_on_a_server_keeps_the_last_checkpoint(tmp_path, certs):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(small)], check=True)
    servers = Servers(tmp_path, certs, state=(tmp_path / "state0", small))
    try:
        out = lpgan("train", str(job_file(tmp_path, servers.ports, certs, "full", iterations=4)))
        assert out.returncode == 1
        assert "server 1" in out.stderr and "could not write checkpoint" in out.stderr, out.stderr
        assert "iteration 1" in out.stderr  # the last checkpoint both confirmed
        assert [p.name for p in (small / "full").glob("*/*")] == ["party1-0000001.pt"]  # STATE/NAME/JOB-DIGEST/
    finally:
        servers.stop()
        subprocess.run(["umount", str(small)], check=False)


def test_usage_errors_exit_non_zero():
    out = lpgan("nosuch")
    assert out.returncode == 2 and "invalid choice" in out.stderr
    out = lpgan("train")
    assert out.returncode == 1 and "--example" in out.stderr
    out = lpgan("train", "--example")
    assert out.returncode == 0 and "[servers]" in out.stdout


def test_bench_runs_the_suites_of_bench():
    out = lpgan("bench", "gan", "--help")
    assert out.returncode == 0 and "--network" in out.stdout
    out = lpgan("bench", "nosuch")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_at_the_owner_is_a_clear_error_and_resume_finishes_the_job(tmp_path, servers, certs):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        job = job_file(tmp_path, servers.ports, certs, "owner-full", iterations=2)
        job.write_text(job.read_text().replace('out = "owner-full"', 'out = "small/out"'))
        out = lpgan("train", str(job))
        assert out.returncode == 1, out.stderr
        assert "could not write" in out.stderr and "free disk space" in out.stderr and "Traceback" not in out.stderr
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        out = lpgan("train", str(job), "--resume")
        assert out.returncode == 0, out.stderr
        assert (small / "out" / "generator.pt").is_file()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_certs_refuses_a_folder_that_holds_a_ca_unless_forced(tmp_path):
    folder = tmp_path / "c"
    assert lpgan("certs", str(folder)).returncode == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = lpgan("certs", str(folder))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "already holds ca.key, ca.pem" in out.stderr and "--force" in out.stderr, out.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing replaced
    out = lpgan("certs", str(folder), "--names", "party2")  # another name, the same CA: still a new CA
    assert out.returncode == 1 and not (folder / "party2.pem").exists()
    out = lpgan("certs", str(folder), "--force")
    assert out.returncode == 0, out.stderr
    assert (folder / "ca.pem").read_bytes() != before["ca.pem"]
    assert lpgan("certs", str(tmp_path / "empty-but-there")).returncode == 0  # a folder without them is fine
    assert "--force" in lpgan("certs", "--help").stdout


@pytest.mark.parametrize("args", [("train", "job.toml"), ("synthesize", "job.toml"),
                                  ("serve", "--party", "0", "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:1",
                                   "--certs", "c"),
                                  ("demo",)])
def test_thread_and_count_options_must_be_positive(args):
    option = "--iterations" if args[0] == "demo" else "--threads"
    for value in ("0", "-2", "x"):
        out = lpgan(*args, option, value, timeout=60)
        assert out.returncode == 2 and f"{option}: expected a positive integer" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_a_job_file_error_names_the_key_and_nothing_else(tmp_path, certs):
    job = job_file(tmp_path, (1, 2), certs, "bad", extra="[protocol]\nfrac_bits = 24\n")
    out = lpgan("train", str(job), "--threads", "2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{job}: [protocol] frac_bits must be an integer from 12 to 18" in out.stderr, out.stderr
    assert "checkpoint" not in out.stderr


def test_ctrl_c_says_which_checkpoint_resume_will_use_and_the_servers_serve_on(tmp_path, servers, certs):
    import signal

    job = job_file(tmp_path, servers.ports, certs, "stopped", iterations=8)
    owner = subprocess.Popen([sys.executable, "-m", "gan.cli", "train", str(job)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    record = tmp_path / "stopped" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (record.exists() and json.loads(record.read_text())["iteration"] >= 2):
        time.sleep(0.1)
    owner.send_signal(signal.SIGINT)
    _, stderr = owner.communicate(timeout=60)
    saved = json.loads(record.read_text())["iteration"]
    assert owner.returncode == 130 and "Traceback" not in stderr, stderr
    assert (f"lpgan train: interrupted; the last checkpoint both servers confirmed is iteration {saved}: "
            f"`lpgan train {job} --resume` continues from there") in stderr, stderr
    out = lpgan("train", str(job))  # a new run would replace the record --resume needs: refused
    assert out.returncode == 1 and "records an unfinished job" in out.stderr and "--fresh" in out.stderr
    deadline = time.monotonic() + 60
    while True:  # the servers end the interrupted job once they see the owner gone: seconds at most
        out = lpgan("train", str(job), "--resume")
        if "is busy with job 'stopped'" not in out.stderr or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    assert f"resuming at iteration {saved}" in out.stdout
    assert json.loads(record.read_text())["finished"] is True
