"""`lpgan demo`: the whole system on this machine, on the bundled MNIST digits.

Fresh certificates; two edge servers (`lpgan serve`, two processes) and the owner (this
process) over mutual TLS 1.3 on loopback; secure training of the small DCGAN preset with a
plaintext twin of the same seed, then a separate secure synthesis job from the trained
generator. The job file it writes (job.toml) is the one `lpgan train` reads, so the run
can be repeated by hand. Outputs and both servers' logs go to one folder.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

from gan import jobfile, launch
from transports import generate_certificates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
lr = 0.002
samples = {samples}
checkpoint_every = {max(1, iterations // 4)}
twin = true
quality = true

[synthesize]
generator = "generator.pt"
preset = "small"
count = {samples}
"""


def start_servers(folder: Path, ports: tuple[int, int]) -> list[subprocess.Popen]:
    servers = []
    for i in (0, 1):
        log = open(folder / f"server{i}-process.log", "w")  # noqa: SIM115 - the child keeps it
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "gan.cli", "serve", "--party", str(i), "--listen", f"127.0.0.1:{ports[i]}",
             "--peer", f"127.0.0.1:{ports[1 - i]}", "--certs", str(folder / "certs"),
             "--state", str(folder / "server-state")], stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return servers


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
    ports = (free_port(), free_port())
    (folder / "job.toml").write_text(job_file(ports, iterations, batch_size, samples))
    print(f"lpgan demo: two edge servers on 127.0.0.1:{ports[0]} and :{ports[1]} and this owner, mutual TLS 1.3; "
          f"the job file is {(folder / 'job.toml').resolve()}")
    servers = start_servers(folder, ports)
    try:
        job = jobfile.load(folder / "job.toml")
        launch.train(job)
        launch.synthesize(job)
    finally:
        stop_servers(servers)
        with contextlib.suppress(OSError):
            print(f"servers' logs: {(folder / 'server0-process.log').resolve()}, "
                  f"{(folder / 'server1-process.log').resolve()}")
    return 0
