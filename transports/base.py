"""The frame interface every transport implements.

A transport is a full-duplex channel of frames between two endpoints. Sending never
blocks (frames are queued); receiving is awaited with an optional timeout. Frames may be
given as one buffer or as a sequence of buffers (a header and raw tensor memory), which
transports write out without joining them first.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

from transports.errors import ConnectionClosed, FrameError, TransportError, TransportTimeout

Buffer = bytes | bytearray | memoryview
Frame = Buffer | Sequence[Buffer]

DEFAULT_MAX_FRAME_BYTES = 1 << 30


def frame_parts(frame: Frame) -> list[memoryview]:
    """The frame as a list of flat byte views, without copying."""
    if isinstance(frame, bytes | bytearray | memoryview):
        frame = (frame,)
    parts = []
    for part in frame:
        view = part if isinstance(part, memoryview) else memoryview(part)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        parts.append(view)
    return parts


@dataclass
class Counters:
    """Frames and payload bytes that crossed a transport (frame headers not included)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Transport(ABC):
    """A full-duplex frame channel to one peer."""

    counters: Counters
    max_frame_bytes: int

    @abstractmethod
    def send(self, frame: Frame) -> None:
        """Queue one frame for the peer; raises ConnectionClosed once the link is down."""

    @abstractmethod
    async def recv(self, timeout: float | None = None) -> Buffer:
        """The next frame from the peer; TransportTimeout after `timeout` seconds."""

    @abstractmethod
    async def close(self) -> None:
        """Deliver what was sent, then close; the peer sees ConnectionClosed."""

    async def drain(self) -> None:
        """Wait until queued frames are handed to the network (flow control)."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once this side closed or the link failed."""


class WrappingTransport(Transport):
    """A transport around another (`inner`): counters, frame limit and closed state are the
    inner one's unless a subclass says otherwise. The simulated link and transports of one's
    own (a recorder, a tap) start from here."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def counters(self) -> Counters:  # type: ignore[override]
        return self.inner.counters

    @property
    def max_frame_bytes(self) -> int:  # type: ignore[override]
        return self.inner.max_frame_bytes

    @property
    def closed(self) -> bool:
        return self.inner.closed


class InboxTransport(Transport):
    """Shared receive side: frames delivered by a producer, awaited by one consumer.

    Cancelling or timing out a `recv` never loses a frame: frames wait in a deque and the
    awaited future is only a wake-up call.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.counters = Counters()
        self.max_frame_bytes = max_frame_bytes
        self._frames: deque[Buffer] = deque()
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or self._error is not None

    def _deliver(self, frame: Buffer) -> None:
        if len(frame) > self.max_frame_bytes:
            self._fail(FrameError(
                f"peer sent a frame of {len(frame)} bytes, above the limit of "
                f"{self.max_frame_bytes}; raise max_frame_bytes if this is expected"))
            return
        self.counters.frames_received += 1
        self.counters.bytes_received += len(frame)
        self._frames.append(frame)
        self._wake()

    def _fail(self, error: TransportError) -> None:
        """Record the first failure; queued frames are still delivered before it."""
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_sendable(self, size: int) -> None:
        if self._closed:
            raise ConnectionClosed("this transport is closed")
        if self._error is not None:
            raise ConnectionClosed(f"the link is down: {self._error}") from self._error
        if size > self.max_frame_bytes:
            raise FrameError(f"frame of {size} bytes exceeds max_frame_bytes={self.max_frame_bytes}")

    async def recv(self, timeout: float | None = None) -> Buffer:
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("recv() is already being awaited by another task")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._frames:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise ConnectionClosed("this transport is closed")
            waiter = self._waiter = loop.create_future()
            try:
                if deadline is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise TransportTimeout(f"no frame from the peer within {timeout:g} s") from None
            finally:
                if self._waiter is waiter:  # a cancelled recv must not clear its successor's waiter
                    self._waiter = None
        return self._frames.popleft()
