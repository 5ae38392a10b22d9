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


def protocol_reads(decoder: FrameDecoder, stream: bytes, max_read: int) -> int:
    """Drive the decoder as asyncio does (get_buffer, write up to max_read, advance); count reads."""
    reads, pos = 0, 0
    while pos < len(stream):
        buf = decoder.get_buffer()
        assert len(buf) >= 1
        n = min(len(buf), max_read, len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        decoder.advance(n)
        pos += n
        reads += 1
    return reads


@given(st.lists(st.binary(max_size=200_000), max_size=4), st.integers(1, 300_000))
@settings(max_examples=60, deadline=None)
def test_buffered_protocol_path(payloads, max_read):
    frames: list[bytes] = []
    protocol_reads(FrameDecoder(1 << 20, lambda f: frames.append(bytes(f))), encode_frames(payloads), max_read)
    assert frames == payloads


def test_small_frames_need_one_read_and_large_ones_land_in_place():
    frames: list[bytearray] = []
    decoder = FrameDecoder(1 << 24, frames.append)
    assert protocol_reads(decoder, encode_frames([b"x" * 100] * 50), 1 << 20) == 1
    big = bytes(range(256)) * 8192  # 2 MiB
    stream = encode_frames([big])
    decoder.get_buffer()
    decoder.advance(0)
    first = decoder.get_buffer()
    first[:1000] = stream[:1000]
    decoder.advance(1000)
    body_view = decoder.get_buffer()  # now a view into the frame's own bytearray
    assert body_view.obj is not decoder._scratch
    protocol_reads(decoder, stream[1000:], 1 << 22)
    assert bytes(frames[-1]) == big


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
