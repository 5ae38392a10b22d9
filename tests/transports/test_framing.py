"""The frame decoder: fragments of any size, early/late bytes, malformed input, memory, fuzzed."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transports.framing
from transports import FrameError
from transports.framing import FIRST_BODY_BYTES, HEADER, MAGIC, SCRATCH_BYTES, FrameDecoder, frame_header


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


def protocol_reads(decoder: FrameDecoder, stream: bytes, max_read: int, keep_views: bool = False) -> int:
    """Drive the decoder as asyncio does (get_buffer, write up to max_read, advance); count reads.
    The loops let go of each buffer before asking for the next; `keep_views` keeps them all."""
    reads, pos, kept = 0, 0, []
    while pos < len(stream):
        buf = decoder.get_buffer()
        assert len(buf) >= 1
        n = min(len(buf), max_read, len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        decoder.advance(n)
        pos += n
        reads += 1
        if keep_views:
            kept.append(buf)
        del buf
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


@given(st.lists(st.binary(max_size=40_000), max_size=4), st.integers(1, 50_000), st.booleans(), st.booleans())
@settings(max_examples=100, deadline=None)
def test_frames_that_grow_as_they_arrive(payloads, max_read, keep_views, resize):
    """With a first allocation of 1000 bytes every frame above it grows, step by step, both
    in place (by PyByteArray_Resize, or by `*=` where there is none) and, while an old view is
    still alive, as a copy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transports.framing, "FIRST_BODY_BYTES", 1000)
        patch.setattr(transports.framing, "SCRATCH_BYTES", 512)
        if not resize:
            patch.setattr(transports.framing, "_resize", None)
        frames: list[bytes] = []
        stream = encode_frames(payloads)
        protocol_reads(FrameDecoder(1 << 20, lambda f: frames.append(bytes(f))), stream, max_read, keep_views)
        assert frames == payloads
        frames.clear()
        assert decode_in_pieces(stream, list(range(0, len(stream), max_read))) == payloads


def test_an_announced_gigabyte_costs_what_arrived():
    """A header announcing 1 GiB used to allocate (and zero) 1 GiB at once, kept as long as the
    peer held the connection; now the frame's memory follows the bytes that really came."""
    decoder = FrameDecoder(1 << 30, lambda f: None)
    sent = bytes(3 << 20)
    tracemalloc.start()
    try:
        decoder.feed(frame_header(1 << 30))
        assert tracemalloc.get_traced_memory()[1] <= FIRST_BODY_BYTES + 4096
        protocol_reads(decoder, sent, 1 << 18)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert decoder.partial == (HEADER.size + len(sent), HEADER.size + (1 << 30))
    assert held <= 2 * (len(sent) + SCRATCH_BYTES) + 4096


def test_a_large_frame_grows_in_place_and_is_read_without_copies():
    frames: list[bytearray] = []
    decoder = FrameDecoder(1 << 30, frames.append)
    payload = os.urandom(1 << 20) * 9 + b"tail"
    stream = frame_header(len(payload)) + payload
    decoder.feed(stream[:HEADER.size])
    reads = []
    pos = HEADER.size
    while pos < len(stream):
        buf = decoder.get_buffer()
        n = min(len(buf), 1 << 20, len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        reads.append((buf.obj, n))
        del buf
        decoder.advance(n)
        pos += n
    assert bytes(frames[0]) == payload
    in_place = sum(n for obj, n in reads if obj is frames[0])  # straight into the frame that was delivered
    assert in_place >= len(payload) - SCRATCH_BYTES
    assert len(reads) <= 10 + 5  # 1 MiB reads, a few of them split where the frame doubled


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
