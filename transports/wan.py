"""A simulated network link over any transport.

Each side models its own outgoing direction: a frame starts serializing when the link is
free (so back-to-back frames queue behind each other), takes size*8/bandwidth seconds on
the wire, then propagation delay (RTT/2) plus optional jitter. The frame is handed to
the inner transport at its arrival time, so the peer sees it when a real link would
deliver it. Times come from time.monotonic(): uvloop's loop.time() ticks in whole
milliseconds, which added about 1 ms per direction. Loop timers are millisecond-coarse
too, so the last stretch before a deadline is napped through (sleep_until).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from transports.base import Buffer, Frame, Transport, WrappingTransport, frame_parts
from transports.errors import FrameError, TransportError

_PRECISE_SECONDS = 0.002  # the last stretch before a deadline, napped through
_NAP_SECONDS = 0.0002


@dataclass(frozen=True)
class NetworkModel:
    """Bandwidth (bit/s, per direction), round-trip time (s), and uniform jitter (s, one way)."""

    bandwidth_bps: float
    rtt_s: float
    jitter_s: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.bandwidth_bps <= 0 or self.rtt_s < 0 or self.jitter_s < 0:
            raise ValueError(f"invalid network {self}: bandwidth must be > 0, rtt and jitter >= 0")

    @property
    def one_way_s(self) -> float:
        return self.rtt_s / 2

    def describe(self) -> str:
        jitter = f", jitter {self.jitter_s * 1e3:g} ms" if self.jitter_s else ""
        return f"{self.name}: {self.bandwidth_bps / 1e6:g} Mbit/s, RTT {self.rtt_s * 1e3:g} ms{jitter}"


PRESETS: dict[str, NetworkModel] = {
    "lan": NetworkModel(1e9, 0.25e-3, name="lan"),
    "wan": NetworkModel(400e6, 40e-3, name="wan"),
    "mobile": NetworkModel(40e6, 80e-3, name="mobile"),
}


def resolve_network(spec: Any) -> NetworkModel | None:
    """None, a preset name, a NetworkModel, or a dict like {"bandwidth_mbps": 100, "rtt_ms": 20}."""
    if spec is None or isinstance(spec, NetworkModel):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown network preset {spec!r}; choose one of {', '.join(PRESETS)} "
                             "or give {'bandwidth_mbps': ..., 'rtt_ms': ...}")
        return PRESETS[spec]
    if isinstance(spec, dict):
        unknown = set(spec) - {"bandwidth_mbps", "rtt_ms", "jitter_ms"}
        if unknown or not {"bandwidth_mbps", "rtt_ms"} <= set(spec):
            raise ValueError(f"custom network needs bandwidth_mbps and rtt_ms (optional jitter_ms), got {spec}")
        return NetworkModel(spec["bandwidth_mbps"] * 1e6, spec["rtt_ms"] / 1e3, spec.get("jitter_ms", 0) / 1e3)
    raise TypeError(f"network must be None, a preset name, a NetworkModel or a dict, not {type(spec).__name__}")


async def sleep_until(deadline: float) -> None:
    """Wait until time.monotonic() >= deadline, accurate to well under a millisecond. The
    loop's timers are millisecond-coarse, so the last stretch sleeps the thread in slices
    of _NAP_SECONDS between turns of the loop rather than spinning: a real link costs the
    sender no CPU, and a spin takes it from work beside the loop (docs/BENCHMARKS.md, "The
    simulated link's last wait"). The price: the loop's other tasks wait up to one slice
    per turn then."""
    coarse = deadline - _PRECISE_SECONDS - time.monotonic()
    if coarse > 0:
        await asyncio.sleep(coarse)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, _NAP_SECONDS))  # noqa: ASYNC251 - deliberate, see above
        await asyncio.sleep(0)


class WanTransport(WrappingTransport):
    """Wraps `inner`, delaying what this side sends as the modelled link would."""

    def __init__(self, inner: Transport, model: NetworkModel, *, seed: int | None = None) -> None:
        super().__init__(inner)
        self.model = model
        self._rng = random.Random(seed)  # simulation only: jitter needs no secrecy
        self._link_free_at = 0.0
        self._last_arrival = 0.0
        self._queue: deque[tuple[float, list[memoryview]]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: TransportError | None = None
        self._pump = asyncio.get_running_loop().create_task(self._run(), name="wan-link")

    @property
    def closed(self) -> bool:
        return self.inner.closed or self._pump.done()

    def send(self, frame: Frame) -> None:
        if self._error is not None:
            raise self._error
        if self.inner.closed:
            self.inner.send(b"")  # raises the inner transport's own error
        parts = frame_parts(frame)
        size = sum(len(p) for p in parts)
        if size > self.inner.max_frame_bytes:
            raise FrameError(f"frame of {size} bytes exceeds max_frame_bytes={self.inner.max_frame_bytes}")
        now = time.monotonic()
        start = max(now, self._link_free_at)
        self._link_free_at = start + size * 8 / self.model.bandwidth_bps
        arrival = self._link_free_at + self.model.one_way_s
        if self.model.jitter_s:
            arrival += self._rng.uniform(0, self.model.jitter_s)
        arrival = max(arrival, self._last_arrival)  # a link does not reorder frames
        self._last_arrival = arrival
        self._queue.append((arrival, [bytes(p) for p in parts]))  # the caller may reuse its buffers
        self._idle.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            arrival, parts = self._queue[0]
            await sleep_until(arrival)
            self._queue.popleft()
            try:
                self.inner.send(parts)
            except TransportError as exc:
                self._error = exc
                self._queue.clear()
                self._idle.set()
                return

    async def recv(self, timeout: float | None = None) -> Buffer:
        return await self.inner.recv(timeout)

    async def drain(self) -> None:
        """Wait until this side's frames have left the sender (serialized), as a socket would."""
        await sleep_until(self._link_free_at)
        await self.inner.drain()

    async def close(self, flush_timeout: float = 10.0) -> None:
        """Deliver frames still on the simulated wire (up to flush_timeout), then close."""
        if not self._pump.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), flush_timeout)
            self._pump.cancel()
        await self.inner.close()
