"""What the examples share: an edge server entry point, and two of them started on this machine.

An example runs its program as an `mpcrt.server.EdgeServer` (`python EXAMPLE.py serve --party
N --listen HOST:PORT --peer HOST:PORT --certs DIR`, one per machine), and a coordinator (the
owner role: the dealer, and whoever receives the outputs) starts jobs on both with
`mpcrt.owner_jobs.start_job`. On one machine, `local_servers` makes certificates and starts the two
servers as processes on loopback (mutual TLS), for as long as the `with` block runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpcrt.runtime import Program
from mpcrt.server import EdgeServer, ServerConfig, parse_address
from transports import generate_certificates
from transports.loop import run as run_loop


def serve(argv: list[str], programs: dict[str, Program], wrap: Any = None) -> int:
    """`serve --party N --listen HOST:PORT --peer HOST:PORT --certs DIR`: serve jobs until stopped;
    `wrap(party_id, transport)`: a transport of one's own around the link to the peer."""
    parser = argparse.ArgumentParser(prog="serve")
    parser.add_argument("--party", type=int, choices=(0, 1), required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--state", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    server = EdgeServer(ServerConfig(args.party, parse_address(args.listen), parse_address(args.peer),
                                     Path(args.certs), Path(args.state), wrap=wrap), programs,
                        log=lambda line: print(line, flush=True))

    async def main() -> None:
        task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve()

    run_loop(main())
    return 0


def parse_servers(argv: list[str]) -> tuple[tuple[tuple[str, int], tuple[str, int]], str]:
    """`ask HOST0:PORT HOST1:PORT --certs DIR`: the two servers' addresses and the owner's certificates."""
    parser = argparse.ArgumentParser(prog="ask")
    parser.add_argument("server0")
    parser.add_argument("server1")
    parser.add_argument("--certs", required=True)
    args = parser.parse_args(argv)
    return (parse_address(args.server0), parse_address(args.server1)), args.certs


def _start(script: str, i: int, listen: str, peer: str, certs: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    """A `script serve` process and the port it reports listening on (it picks a free one)."""
    proc = subprocess.Popen([sys.executable, script, "serve", "--party", str(i), "--listen", listen, "--peer", peer,
                             "--certs", str(certs), *extra], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"listening on [^ ]*:(\d+) ", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its log
            return proc, int(found.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{script} serve --party {i} did not start listening")


@contextlib.contextmanager
def local_servers(script: str, per_party: tuple[list[str], list[str]] = ([], [])
                  ) -> Iterator[tuple[tuple[tuple[str, int], tuple[str, int]], Path]]:
    """Two `script serve` processes on loopback, on ports the system picks (server 0 first, then
    server 1 with it as its peer); yields (their addresses, the certificates folder)."""
    with tempfile.TemporaryDirectory(prefix="lpgan-example-") as folder:
        certs = Path(folder)
        generate_certificates(certs)
        procs: list[subprocess.Popen] = []
        try:
            first, port0 = _start(script, 0, "127.0.0.1:0", "127.0.0.1:1", certs, per_party[0])
            procs.append(first)
            second, port1 = _start(script, 1, "127.0.0.1:0", f"127.0.0.1:{port0}", certs, per_party[1])
            procs.append(second)
            yield (("127.0.0.1", port0), ("127.0.0.1", port1)), certs
        finally:
            for p in procs:
                p.terminate()
            deadline = time.monotonic() + 10
            for p in procs:
                try:
                    p.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    p.kill()
