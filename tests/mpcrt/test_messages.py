"""The runtime's frame format: every dtype and shape round-trips; bad frames are refused."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpcrt.messages import (
    ABORT,
    DATA,
    MAX_VALUE_DIMS,
    MAX_VALUE_ELEMENTS,
    MalformedFrame,
    Message,
    decode,
    encode,
    shape_problem,
    value_problem,
)
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


@pytest.mark.parametrize(("shape", "expected", "problem"), [
    ([2, 3], None, None),
    ((), None, None),
    ([0, 5], (0, 5), None),
    ([2, 3], (3, 2), "differs from the expected (3, 2)"),
    ([2, -3], None, "negative size"),
    ([1] * (MAX_VALUE_DIMS + 1), None, "more than"),
    ([MAX_VALUE_ELEMENTS, 2], None, "above the bound"),
    ([2, True], None, "not a list of integers"),
    ("23", None, "not a list of integers"),
    ([2.0], None, "not a list of integers"),
])
def test_shape_problem_bounds_what_a_description_may_allocate(shape, expected, problem):
    got = shape_problem(shape, expected)
    assert (got is None) if problem is None else (problem in got)


@pytest.mark.parametrize(("frac_bits", "dtype_index", "job", "problem"), [
    (16, 0, 16, None),
    (0, 4, 16, None),
    (12, 0, None, None),  # scale not known yet: any valid one for a float
    (16, 10, 16, "dtype index 10"),
    (16, True, 16, "dtype index True"),
    (15, 0, 16, "15 fractional bits, where this job uses 16"),
    (16, 4, 16, "where this job uses 0"),
    (31, 0, None, "not an integer in [0, 30]"),
    ("16", 0, 16, "not an integer"),
])
def test_value_problem_checks_index_and_scale(frac_bits, dtype_index, job, problem):
    got = value_problem(frac_bits, dtype_index, job)
    assert (got is None) if problem is None else (problem in got)
