"""The frame decoder: fragments of any size, early/late bytes, malformed input, fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports import FrameError
from transports.framing import HEADER, MAGIC, FrameDecoder, frame_header


def encode_frames(payloads: list[bytes]) -> bytes:
    return b"".join(frame_header(len(p)) + p for p in payloads)


def decode_in_pieces(stream: bytes, cuts: list[int], max_frame_bytes: int = 1 << 20) -> list[bytes]:
    frames: list[bytes] = []
    decoder = FrameDecoder(max_frame_bytes, lambda f: frames.append(bytes(f)))
    pos = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        decoder.feed(stream[pos:cut])
        pos = max(pos, cut)
    return frames


def test_header_layout():
    assert frame_header(5) == MAGIC + (5).to_bytes(8, "little")
    assert HEADER.size == 12


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(0, 3000), max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_fragmentation_gives_the_same_frames(payloads, cuts):
    stream = encode_frames(payloads)
    assert decode_in_pieces(stream, [c for c in cuts if c <= len(stream)]) == payloads


def test_byte_at_a_time_and_all_at_once():
    payloads = [b"", b"a", b"hello" * 100, b""]
    stream = encode_frames(payloads)
    assert decode_in_pieces(stream, list(range(len(stream)))) == payloads
    assert decode_in_pieces(stream, []) == payloads


def test_buffered_protocol_path_writes_into_the_frame():
    frames: list[bytearray] = []
    decoder = FrameDecoder(100, frames.append)
    stream = encode_frames([b"xyz"])
    for byte in stream:  # what asyncio does: get_buffer, write, buffer_updated
        buf = decoder.get_buffer()
        assert len(buf) >= 1
        buf[0] = byte
        decoder.advance(1)
    assert frames == [bytearray(b"xyz")]


def test_partial_reports_progress_inside_a_frame():
    decoder = FrameDecoder(100, lambda f: None)
    assert decoder.partial is None
    decoder.feed(frame_header(10) + b"abc")
    assert decoder.partial == (15, 22)


def test_bad_magic_is_a_frame_error():
    decoder = FrameDecoder(100, lambda f: None)
    with pytest.raises(FrameError, match="bad magic"):
        decoder.feed(b"GET / HTTP/1.1\r\n")


def test_oversized_length_is_refused_before_allocating():
    decoder = FrameDecoder(1000, lambda f: None)
    with pytest.raises(FrameError, match="limit of 1000"):
        decoder.feed(MAGIC + (1 << 62).to_bytes(8, "little"))


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_garbage_gives_frames_or_frame_error_only(data):
    frames: list[bytes] = []
    decoder = FrameDecoder(64, lambda f: frames.append(bytes(f)))
    try:
        decoder.feed(data)
    except FrameError:
        return
    assert all(len(f) <= 64 for f in frames)
