"""Validate the WAN simulator's bandwidth model against real kernel rate shaping (tc tbf and htb).

    sudo .venv/bin/python -m bench.netns_tbf [--json PATH]

Two network namespaces joined by a veth pair; the sender's end of the veth shapes its egress
with tc. A receiver and a sender process (this module's --role entry points, started with
`ip netns exec`) move 32 MiB in 1 MiB frames over the project's plain TCP transport, and the
receiver times the first to the last frame. The simulator (`WanTransport` over a memory pair,
with the RTT measured in the namespaces) moves the same frames, timed the same way.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.transport import (
    MIB,
    TIMEOUT,
    FrameLink,
    Row,
    Scenario,
    exchange,
    format_table,
    machine,
    run_in_process,
    runs,
)
from transports import NetworkModel, connect, listen
from transports.loop import run as run_loop

FRAMES = 32
REPEATS = 3
RATES_MBIT = (100, 400)
MTU = 1500
# Payload per full segment over what tbf/htb charge for it: Ethernet header 14, IPv4 20, TCP with timestamps 32.
HEADER_EFFICIENCY = (MTU - 20 - 32) / (MTU + 14)
RECEIVER_ADDR, SENDER_ADDR = "10.213.0.1", "10.213.0.2"
REPO = Path(__file__).resolve().parents[1]
PINGS = Scenario("ping", "tcp", "ping", iterations=200, warmup=20)
BULK = Scenario("bulk", "tcp", "bulk", frames=FRAMES, drain_each=False)


def ip(*args: str) -> None:
    """Run one `ip`/`tc` command, failing with its stderr."""
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


class VethLink:
    """Two namespaces (receiver, sender) joined by a veth pair; removed on exit, even after a failure."""

    def __init__(self) -> None:
        tag = os.getpid()
        self.rx_ns, self.tx_ns = f"lpgan-{tag}-rx", f"lpgan-{tag}-tx"
        self.rx_dev, self.tx_dev = f"lpg{tag}r", f"lpg{tag}t"
        self._made: list[str] = []

    def __enter__(self) -> VethLink:
        atexit.register(self.remove)
        for ns in (self.rx_ns, self.tx_ns):
            ip("ip", "netns", "add", ns)
            self._made.append(ns)
        ip("ip", "link", "add", self.rx_dev, "type", "veth", "peer", "name", self.tx_dev)
        for ns, dev, addr in ((self.rx_ns, self.rx_dev, RECEIVER_ADDR), (self.tx_ns, self.tx_dev, SENDER_ADDR)):
            ip("ip", "link", "set", dev, "netns", ns)
            ip("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("ip", "-n", ns, "link", "set", dev, "mtu", str(MTU), "up")
            ip("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Deleting a namespace deletes the veth end inside it (and so the pair)."""
        while self._made:
            subprocess.run(["ip", "netns", "del", self._made.pop()], capture_output=True)

    def shape(self, shaper: str, mbit: int) -> None:
        """Replace the sender's egress qdisc: tbf as specified, an htb class at the same rate, or "none"."""
        subprocess.run(["ip", "netns", "exec", self.tx_ns, "tc", "qdisc", "del", "dev", self.tx_dev, "root"],
                       capture_output=True)
        tc = ("ip", "netns", "exec", self.tx_ns, "tc")
        if shaper == "tbf":
            ip(*tc, "qdisc", "add", "dev", self.tx_dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", "32kbit",
               "latency", "400ms")
        elif shaper == "htb":
            ip(*tc, "qdisc", "add", "dev", self.tx_dev, "root", "handle", "1:", "htb", "default", "10")
            ip(*tc, "class", "add", "dev", self.tx_dev, "parent", "1:", "classid", "1:10", "htb", "rate",
               f"{mbit}mbit", "ceil", f"{mbit}mbit")

    def transfer(self) -> dict[str, Any]:
        """One connection: pings, then REPEATS bulk transfers; both processes' timings."""
        command = [sys.executable, "-m", "bench.netns_tbf", "--role"]
        receiver = subprocess.Popen(["ip", "netns", "exec", self.rx_ns, *command, "receiver"], cwd=REPO,
                                    stdout=subprocess.PIPE, text=True)
        sender = None
        try:
            assert receiver.stdout is not None
            port = receiver.stdout.readline().strip()
            sender = subprocess.Popen(["ip", "netns", "exec", self.tx_ns, *command, "sender", "--port", port],
                                      cwd=REPO, stdout=subprocess.PIPE, text=True)
            sent, _ = sender.communicate(timeout=300)
            received, _ = receiver.communicate(timeout=60)
            if sender.returncode or receiver.returncode:
                raise RuntimeError(f"transfer failed (sender exit {sender.returncode}, "
                                   f"receiver exit {receiver.returncode})")
        finally:
            for proc in (receiver, sender):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        return json.loads(sent) | json.loads(received)


# ---- the two ends, run inside the namespaces ------------------------------------------------------

async def receiver_side() -> dict[str, list[float]]:
    listener = await listen(RECEIVER_ADDR, 0, tls=None, timeout=TIMEOUT, allow_plain_remote=True)  # netns link
    print(listener.port, flush=True)
    try:
        link = FrameLink(await listener.accept(TIMEOUT))
    finally:
        await listener.close()
    try:
        await exchange(PINGS, link, sender=False)
        return {"spans": [t for _ in range(REPEATS) for t in await exchange(BULK, link, sender=False)]}
    finally:
        await link.close()


async def sender_side(port: int) -> dict[str, list[float]]:
    link = FrameLink(await connect(RECEIVER_ADDR, port, tls=None, timeout=TIMEOUT, allow_plain_remote=True))
    try:
        rtts = await exchange(PINGS, link, sender=True)
        return {"rtts": rtts, "acks": [t for _ in range(REPEATS) for t in await exchange(BULK, link, sender=True)]}
    finally:
        await link.close()


# ---- the comparison --------------------------------------------------------------------------------

@dataclass
class Result:
    """One shaper at one rate: kernel goodput against the simulator and the configured rate.

    First-to-last-frame timing excludes the propagation delay but needs paced arrivals: unshaped,
    one read callback can take in several frames before the receiver's task wakes, so the
    unshaped run is reported start to ack.
    """

    shaper: str
    configured_mbit: float
    rtt_ms: float
    kernel_mbit: float
    kernel_ack_mbit: float
    simulator_mbit: float

    @property
    def expected_kernel_mbit(self) -> float:
        return self.configured_mbit * HEADER_EFFICIENCY


def goodput_mbit(span_s: float) -> float:
    """Payload rate between the first and last frame's arrival (the first frame is not counted)."""
    return (FRAMES - 1) * MIB * 8 / span_s / 1e6


def simulate(mbit: float, rtt_s: float) -> float:
    model = NetworkModel(mbit * 1e6, rtt_s, name="namespace")
    sims = [Scenario(f"sim#{r}", "memory", "bulk", model, FRAMES, drain_each=False) for r in range(REPEATS)]
    return goodput_mbit(statistics.median(runs(run_in_process(sims), "sim", side=1)))


def kernel(link: VethLink, shaper: str, mbit: int) -> tuple[float, float, float]:
    """(RTT seconds, goodput first to last frame, goodput start to ack) through the shaped veth."""
    link.shape(shaper, mbit)
    timings = link.transfer()
    ack_mbit = FRAMES * MIB * 8 / statistics.median(timings["acks"]) / 1e6
    return statistics.median(timings["rtts"]), goodput_mbit(statistics.median(timings["spans"])), ack_mbit


def measure(link: VethLink, shaper: str, mbit: int) -> Result:
    rtt, goodput, ack_mbit = kernel(link, shaper, mbit)
    return Result(shaper, mbit, rtt * 1e3, goodput, ack_mbit, simulate(mbit, rtt))


def rows(results: Sequence[Result]) -> list[Row]:
    """Table rows: each goodput as a ratio of the configured rate."""
    table = []
    for r in results:
        where = f"{r.shaper} {r.configured_mbit:g} Mbit/s"
        table.append(Row(where, "RTT in the namespaces (1 B ping-pong, median)", r.rtt_ms, "ms"))
        for name, value in (("kernel goodput, first to last frame", r.kernel_mbit),
                            ("kernel goodput, start to ack", r.kernel_ack_mbit),
                            ("expected kernel goodput (TCP/IP/Ethernet headers)", r.expected_kernel_mbit),
                            ("simulator goodput, first to last frame", r.simulator_mbit)):
            table.append(Row(where, name, value, "Mbit/s", ratio=value / r.configured_mbit))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.netns_tbf", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--role", choices=("receiver", "sender"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        result = run_loop(receiver_side() if args.role == "receiver" else sender_side(args.port))
        print(json.dumps(result), flush=True)
        return 0
    if os.geteuid() != 0:
        print("bench.netns_tbf needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the namespaces are still removed
    started = time.perf_counter()
    with VethLink() as link:
        unshaped_rtt, _, unshaped_mbit = kernel(link, "none", 0)  # start to ack: see Result
        results = [measure(link, shaper, mbit) for shaper in ("tbf", "htb") for mbit in RATES_MBIT]
    print(format_table(rows(results)))
    print(f"unshaped veth: {unshaped_mbit:.0f} Mbit/s start to ack, RTT {unshaped_rtt * 1e3:.3f} ms (so the "
          "shaper, not the CPU, limits the shaped runs)")
    print(f"{time.perf_counter() - started:.0f} s; {FRAMES} x 1 MiB per transfer, median of {REPEATS}; "
          "Mbit = 10^6 bits, as tc's mbit")
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                  "unshaped": {"rtt_ms": unshaped_rtt * 1e3, "kernel_mbit": unshaped_mbit},
                  "results": [asdict(r) for r in results]}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
