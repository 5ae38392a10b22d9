"""`lpgan demo`: the whole system on this machine, on the MNIST digits shipped with lpgan.

Fresh certificates; two edge servers (`lpgan serve`, two processes) and the owner (this
process) over mutual TLS 1.3 on loopback; secure training of the small DCGAN preset with a
plaintext twin on the same inputs, then a separate secure synthesis job from the trained
generator. The job file it writes (job.toml) is the one `lpgan train` reads, so the run
can be repeated by hand. Outputs and both servers' logs go to one folder.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

from gan import jobfile, launch
from transports import generate_certificates

LISTENING = re.compile(r"listening on [^ ]*:(\d+) ")


def wait_listening(proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> int:
    """The port a `lpgan serve --listen HOST:0` process reports in its log, once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text()) if log.exists() else None
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited (code {proc.returncode}) before listening: {log.read_text()[-500:]}")
        time.sleep(0.05)
    raise TimeoutError(f"the server did not start listening within {timeout:g} s; see {log}")


def serve_process(party: int, listen: str, peer: str, certs: Path, state: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "gan.cli", "serve", "--party", str(party), "--listen", listen,
                                 "--peer", peer, "--certs", str(certs), "--state", str(state)],
                                stdout=out, stderr=subprocess.STDOUT)


def start_servers(certs: Path, state: Path, logs: tuple[Path, Path], host: str = "127.0.0.1"
                  ) -> tuple[list[subprocess.Popen], tuple[int, int]]:
    """Two `lpgan serve` processes on ports the system picks (no race for a free port): server 0
    first, then server 1 with server 0's port as its peer (party 1 dials party 0)."""
    first = serve_process(0, f"{host}:0", f"{host}:1", certs, state, logs[0])
    try:
        port0 = wait_listening(first, logs[0])
        second = serve_process(1, f"{host}:0", f"{host}:{port0}", certs, state, logs[1])
        return [first, second], (port0, wait_listening(second, logs[1]))
    except BaseException:
        first.kill()
        raise


def job_file(ports: tuple[int, int], iterations: int, batch_size: int, samples: int) -> str:
    return f"""\
name = "demo"
out = "."

[servers]
party0 = "127.0.0.1:{ports[0]}"
party1 = "127.0.0.1:{ports[1]}"
certs = "certs"
timeout = 300

[train]
preset = "small"
iterations = {iterations}
batch_size = {batch_size}
lr = 0.0015
betas = [0.0, 0.9]
samples = {samples}
checkpoint_every = {max(1, iterations // 4)}
twin = true
quality = true

[synthesize]
generator = "generator.pt"
preset = "small"
count = {samples}
"""


def stop_servers(servers: list[subprocess.Popen]) -> None:
    for p in servers:
        p.terminate()
    for p in servers:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def run_demo(iterations: int, samples: int, out: str, batch_size: int) -> int:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    generate_certificates(folder / "certs")
    servers, ports = start_servers(folder / "certs", folder / "server-state",
                                   (folder / "server0-process.log", folder / "server1-process.log"))
    (folder / "job.toml").write_text(job_file(ports, iterations, batch_size, samples))
    print(f"lpgan demo: two edge servers on 127.0.0.1:{ports[0]} and :{ports[1]} and this owner, mutual TLS 1.3; "
          f"the job file is {(folder / 'job.toml').resolve()}")
    try:
        job = jobfile.load(folder / "job.toml")
        launch.train(job, fresh=True)  # a demo starts over, even after an interrupted one in the same folder
        launch.synthesize(job)
    finally:
        stop_servers(servers)
        with contextlib.suppress(OSError):
            print(f"servers' logs: {(folder / 'server0-process.log').resolve()}, "
                  f"{(folder / 'server1-process.log').resolve()}")
    return 0
