"""Length-prefixed frames on a byte stream: the header, and an incremental decoder.

The decoder hands out the buffer the next bytes should land in (asyncio's
BufferedProtocol contract). Between frames and for the tail of small frames that is a
64 KiB scratch buffer, so many small frames cost one read; inside a large frame it is the
frame's own bytearray, so bulk payload is read with no intermediate copy. It accepts
bytes in fragments of any size.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from transports.errors import FrameError

MAGIC = b"MPF1"
HEADER = struct.Struct("<4sQ")
SCRATCH_BYTES = 1 << 16


def frame_header(length: int) -> bytes:
    """The 12-byte header that precedes a payload of `length` bytes."""
    return HEADER.pack(MAGIC, length)


class FrameDecoder:
    """Turns a byte stream into frames, calling `on_frame(bytearray)` for each."""

    def __init__(self, max_frame_bytes: int, on_frame: Callable[[bytearray], None]) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._on_frame = on_frame
        self._header = bytearray(HEADER.size)
        self._header_pos = 0
        self._body: bytearray | None = None
        self._body_pos = 0
        self._scratch = bytearray(SCRATCH_BYTES)
        self._into_body = False

    @property
    def partial(self) -> tuple[int, int] | None:
        """(bytes received, bytes expected) of an unfinished frame, or None between frames."""
        if self._body is not None:
            return HEADER.size + self._body_pos, HEADER.size + len(self._body)
        if self._header_pos:
            return self._header_pos, HEADER.size
        return None

    def get_buffer(self) -> memoryview:
        """Where the next received bytes must be written (never empty)."""
        body = self._body
        self._into_body = body is not None and len(body) - self._body_pos >= SCRATCH_BYTES
        if self._into_body:
            return memoryview(body)[self._body_pos:]  # type: ignore[index]
        return memoryview(self._scratch)

    def advance(self, n: int) -> None:
        """Account for `n` bytes written into the last buffer from get_buffer()."""
        if self._into_body:
            self._body_pos += n
            if self._body_pos == len(self._body):  # type: ignore[arg-type]
                self._finish()
        else:
            self.feed(memoryview(self._scratch)[:n])

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Push bytes in: complete frames are delivered, the rest is kept for later."""
        data = memoryview(data)
        while data:
            if self._body is None:
                take = min(HEADER.size - self._header_pos, len(data))
                self._header[self._header_pos:self._header_pos + take] = data[:take]
                self._header_pos += take
                data = data[take:]
                if self._header_pos == HEADER.size:
                    self._start_body()
            else:
                take = min(len(self._body) - self._body_pos, len(data))
                self._body[self._body_pos:self._body_pos + take] = data[:take]
                self._body_pos += take
                data = data[take:]
                if self._body_pos == len(self._body):
                    self._finish()

    def _start_body(self) -> None:
        magic, length = HEADER.unpack(self._header)
        if magic != MAGIC:
            raise FrameError(f"malformed frame: bad magic {bytes(magic)!r} (expected {MAGIC!r}); "
                             "is the peer an lpgan party of the same version?")
        if length > self.max_frame_bytes:
            raise FrameError(f"peer announced a frame of {length} bytes, above the limit of "
                             f"{self.max_frame_bytes}; raise max_frame_bytes if this is expected")
        self._header_pos = 0
        self._body = bytearray(length)
        self._body_pos = 0
        if length == 0:
            self._finish()

    def _finish(self) -> None:
        body, self._body = self._body, None
        assert body is not None
        self._on_frame(body)
