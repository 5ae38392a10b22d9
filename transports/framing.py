"""Length-prefixed frames on a byte stream: the header, and an incremental decoder.

The decoder hands out the buffer the next bytes should land in (asyncio's
BufferedProtocol contract). Between frames and for the tail of small frames that is a
64 KiB scratch buffer, so many small frames cost one read; inside a large frame it is the
frame's own bytearray, so bulk payload is read with no intermediate copy. It accepts
bytes in fragments of any size.

A frame's bytearray starts at no more than 1 MiB and doubles as its bytes arrive, up to
the size its header announced: memory follows what a peer really sent, so a header that
announces 1 GiB and sends nothing costs 1 MiB, not 1 GiB.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from transports.errors import FrameError

MAGIC = b"MPF1"
HEADER = struct.Struct("<4sQ")
SCRATCH_BYTES = 1 << 16
FIRST_BODY_BYTES = 1 << 20  # a frame's first allocation, at most; it doubles as bytes arrive


def _resizer() -> Callable[[bytearray, int], int] | None:
    """CPython's PyByteArray_Resize: grows a bytearray without writing its new bytes (a realloc,
    often without a copy). `*=` writes them all once more, which cost 32 MiB frames over TLS a
    few percent of their throughput; the bytes are never seen: a frame is handed out only once
    every byte of it has arrived."""
    try:
        import ctypes

        return ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_ssize_t)(
            ("PyByteArray_Resize", ctypes.pythonapi))
    except (ImportError, AttributeError):  # not CPython
        return None


_resize = _resizer()


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
        self._body: bytearray | None = None  # the frame so far; grows up to _length
        self._body_pos = 0
        self._length = 0
        self._scratch = bytearray(SCRATCH_BYTES)
        self._into_body = False

    @property
    def partial(self) -> tuple[int, int] | None:
        """(bytes received, bytes expected) of an unfinished frame, or None between frames."""
        if self._body is not None:
            return HEADER.size + self._body_pos, HEADER.size + self._length
        if self._header_pos:
            return self._header_pos, HEADER.size
        return None

    def get_buffer(self) -> memoryview:
        """Where the next received bytes must be written (never empty)."""
        body = self._body
        self._into_body = body is not None and self._length - self._body_pos >= SCRATCH_BYTES
        if not self._into_body:
            return memoryview(self._scratch)
        while len(body) - self._body_pos < SCRATCH_BYTES:  # type: ignore[arg-type]
            body = self._grow()  # ends by length - _body_pos >= SCRATCH_BYTES
        return memoryview(body)[self._body_pos:]

    def advance(self, n: int) -> None:
        """Account for `n` bytes written into the last buffer from get_buffer()."""
        if self._into_body:
            self._body_pos += n
            if self._body_pos == self._length:
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
                take = min(self._length - self._body_pos, len(data))
                body = self._body
                while len(body) < self._body_pos + take:
                    body = self._grow()
                body[self._body_pos:self._body_pos + take] = data[:take]
                self._body_pos += take
                data = data[take:]
                if self._body_pos == self._length:
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
        # ceil(length / 2**k) <= FIRST_BODY_BYTES: k doublings end at length (plus under 2**k bytes, cut off)
        first = length
        while first > FIRST_BODY_BYTES:
            first = (first + 1) >> 1
        self._body = bytearray(first)
        self._body_pos = 0
        self._length = length
        if length == 0:
            self._finish()

    def _grow(self) -> bytearray:
        """Double the frame's buffer in place, at most to its length."""
        body = self._body
        assert body is not None and len(body) < self._length
        try:
            if _resize is not None:
                _resize(body, min(2 * len(body), self._length))
            else:
                body *= 2  # writes the new half once more; received bytes overwrite it
        except BufferError:  # a view from an earlier get_buffer() is still alive: grow a copy
            body = self._body = body + body
        if len(body) > self._length:
            del body[self._length:]  # under 2**k bytes: no reallocation
        return body

    def _finish(self) -> None:
        body, self._body = self._body, None
        assert body is not None
        self._on_frame(body)
