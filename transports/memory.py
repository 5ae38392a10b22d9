"""Two connected endpoints inside one process (tests, single-process runs)."""

from __future__ import annotations

from transports.base import DEFAULT_MAX_FRAME_BYTES, Buffer, Frame, InboxTransport, frame_parts
from transports.errors import ConnectionClosed


class MemoryTransport(InboxTransport):
    """One end of an in-process pair. Frames are copied once, so senders may reuse buffers."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes)
        self._peer: MemoryTransport | None = None

    def send(self, frame: Frame) -> None:
        parts = frame_parts(frame)
        size = sum(len(p) for p in parts)
        self._check_sendable(size)
        payload = bytearray(size)
        view = memoryview(payload)
        pos = 0
        for part in parts:
            view[pos:pos + len(part)] = part
            pos += len(part)
        self.counters.frames_sent += 1
        self.counters.bytes_sent += size
        assert self._peer is not None
        self._peer._deliver(payload)

    def inject(self, frame: Buffer) -> None:
        """Deliver raw bytes as if the peer had sent them (fault-injection in tests)."""
        self._deliver(bytearray(frame))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._peer is not None:
            self._peer._fail(ConnectionClosed("the peer closed the connection"))


def pair(max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-process endpoints."""
    a, b = MemoryTransport(max_frame_bytes), MemoryTransport(max_frame_bytes)
    a._peer, b._peer = b, a
    return a, b
