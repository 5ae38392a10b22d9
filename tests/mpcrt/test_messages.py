"""The runtime's frame format: every dtype and shape round-trips; bad frames are refused."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpcrt.messages import ABORT, DATA, MalformedFrame, Message, decode, encode
from transports.base import frame_parts


def join(buffers) -> bytearray:
    return bytearray(b"".join(bytes(p) for p in frame_parts(buffers)))


def test_round_trip_of_every_dtype_and_odd_shapes():
    tensors = [torch.arange(7, dtype=torch.int64), torch.tensor(5), torch.zeros(0, 3, dtype=torch.int64),
               torch.tensor([True, False, True]), torch.arange(3, dtype=torch.uint8),
               torch.randn(2, 3, 5), torch.randn(4, dtype=torch.float64), torch.arange(6, dtype=torch.int32)]
    msgs = [Message((1, 2), "relu/mul", tensors[:4]), Message((3,), "reveal", tensors[4:])]
    kind, got, fields = decode(join(encode(DATA, msgs, extra=1)))
    assert kind == DATA and fields == {"extra": 1}
    for sent, received in zip(msgs, got):
        assert (received.id, received.label) == (sent.id, sent.label)
        for a, b in zip(sent.tensors, received.tensors):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_received_tensors_are_aligned_views_into_the_frame():
    payload = join(encode(DATA, [Message((1,), "x", [torch.tensor([1], dtype=torch.uint8), torch.arange(3)])]))
    _, (m,), _ = decode(payload)
    base = torch.frombuffer(payload, dtype=torch.uint8).data_ptr()
    assert (m.tensors[1].data_ptr() - base) % 8 == 0
    assert m.tensors[1].data_ptr() != 0 and torch.equal(m.tensors[1], torch.arange(3))


def test_non_contiguous_and_grad_tensors_are_sent_by_value():
    t = torch.arange(12).reshape(3, 4).t()
    w = torch.ones(2, requires_grad=True)
    _, (m,), _ = decode(join(encode(DATA, [Message((1,), "x", [t, w])])))
    assert torch.equal(m.tensors[0], t) and torch.equal(m.tensors[1], torch.ones(2))


def test_control_frames_carry_fields():
    kind, msgs, fields = decode(join(encode(ABORT, error="boom")))
    assert (kind, msgs, fields) == (ABORT, [], {"error": "boom"})


def test_unsupported_dtype_is_refused():
    with pytest.raises(TypeError, match="cannot send"):
        encode(DATA, [Message((1,), "x", [torch.zeros(2, dtype=torch.complex64)])])


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\xff\xff\xff\x00abc", b"\x03\x00\x00\x00\x93\x01\x02"])
def test_malformed_frames(payload):
    with pytest.raises(MalformedFrame, match="same lpgan version"):
        decode(bytearray(payload))


def test_a_frame_whose_sizes_disagree_with_its_header_is_malformed():
    payload = join(encode(DATA, [Message((1,), "x", [torch.arange(4)])]))
    with pytest.raises(MalformedFrame):
        decode(payload[:-8])
    with pytest.raises(MalformedFrame):
        decode(payload + bytearray(8))


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzzed_frames_decode_or_raise_malformed(data):
    with contextlib.suppress(MalformedFrame):
        decode(bytearray(data))


VALID = join(encode(DATA, [Message((1, 2), "relu", [torch.arange(5), torch.tensor([True])]),
                           Message((3,), "reveal", [torch.randn(2, 2)])]))


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(VALID)))
@settings(max_examples=500, deadline=None)
def test_corrupted_valid_frames_decode_or_raise_malformed(flips, cut):
    data = bytearray(VALID[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(MalformedFrame):
        decode(data)
