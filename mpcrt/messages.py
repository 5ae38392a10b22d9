"""The runtime's frame format: a msgpack header, then raw tensor bytes.

Layout: u32 header length, header, zero padding to 8 bytes, then each tensor's bytes
padded to 8, so received tensors are aligned views into the frame (no copy). The header
names the kind of frame and, for data, each message's id, op label and tensor specs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import torch

from mpcrt import ring
from mpcrt.errors import ProgramMismatch
from mpcrt.scope import MessageId

DATA, HELLO, ABORT, BYE = "data", "hello", "abort", "bye"

_DTYPES = {"i8": torch.int64, "i4": torch.int32, "i2": torch.int16, "i1": torch.int8, "u1": torch.uint8,
           "b1": torch.bool, "f4": torch.float32, "f8": torch.float64}
_CODES = {v: k for k, v in _DTYPES.items()}
_LENGTH = struct.Struct("<I")
_PAD = bytes(8)


def _pad(n: int) -> int:
    return -n % 8


@dataclass
class Message:
    id: MessageId
    label: str
    tensors: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


class MalformedFrame(ProgramMismatch):
    """A frame from the peer that does not decode: different version or corrupted."""


def dtype_of(code: str) -> torch.dtype:
    """The dtype a `spec` code names."""
    return _DTYPES[code]


def spec(t: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    if t.dtype not in _CODES:
        raise TypeError(f"cannot send tensors of dtype {t.dtype}; supported: {sorted(map(str, _CODES))}")
    return _CODES[t.dtype], tuple(t.shape)


def encode(kind: str, messages: list[Message] = (), **fields: Any) -> list[memoryview | bytes]:
    """Buffers of one frame; tensor memory is referenced, not copied."""
    labels: dict[str, int] = {}
    entries, buffers = [], []
    for m in messages:
        specs = []
        for t in m.tensors:
            code, shape = spec(t)
            specs.append([code, list(shape)])
            flat = t.detach().contiguous().reshape(-1)
            if flat.numel():
                view = memoryview(flat.numpy()).cast("B")
                buffers.append(view)
                if _pad(len(view)):
                    buffers.append(_PAD[:_pad(len(view))])
        entries.append([list(m.id), labels.setdefault(m.label, len(labels)), specs])
    header = msgpack.packb({"k": kind, "l": list(labels), "m": entries, **fields})
    lead = _LENGTH.pack(len(header)) + header
    return [lead + _PAD[:_pad(len(lead))], *buffers]


def decode(payload: bytearray | memoryview) -> tuple[str, list[Message], dict[str, Any]]:
    """Kind, messages (tensors are views into `payload`) and extra header fields."""
    try:
        (n,) = _LENGTH.unpack_from(payload, 0)
        header = msgpack.unpackb(memoryview(payload)[_LENGTH.size:_LENGTH.size + n])
        if not isinstance(header, dict):
            raise TypeError(f"header is a {type(header).__name__}, not a map")
        kind, labels, entries = header.pop("k"), header.pop("l"), header.pop("m")
        offset = _LENGTH.size + n
        offset += _pad(offset)
        messages = []
        for mid, label_index, specs in entries:
            tensors = []
            for code, shape in specs:
                dtype = _DTYPES[code]
                count = 1
                for d in shape:
                    count *= d
                if count:
                    t = torch.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
                else:
                    t = torch.empty(shape, dtype=dtype)
                nbytes = count * t.element_size()
                offset += nbytes + _pad(nbytes)
                tensors.append(t)
            messages.append(Message(tuple(mid), labels[label_index], tensors))
        if offset != len(payload):
            raise ValueError(f"frame has {len(payload)} bytes, header describes {offset}")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error,
            msgpack.UnpackException, RuntimeError) as exc:
        raise MalformedFrame(f"malformed frame from the peer ({type(exc).__name__}: {exc}); "
                             "are both parties running the same lpgan version?") from exc
    return kind, messages, header


# ---- the description of a value that another process sends -----------------------------------

# A secret value travels as ring elements plus (frac_bits, dtype index, shape): party.input's
# header from the peer, the owner's inputs, the parties' outputs to the owner. The index is
# the dtype's position here, the same in every process.
VALUE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
# The description decides what is allocated and how values decode, so a process that lies
# must meet a bound, not a MemoryError: 2^28 elements are 2 GiB of ring elements.
MAX_VALUE_ELEMENTS = 1 << 28
MAX_VALUE_DIMS = 32
MAX_FRAC_BITS = 30  # as ring.check_frac_bits


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class EncodedValue:
    """A plaintext value as it is secret-shared: ring elements, and the (frac_bits, dtype
    index) that describe it on the wire."""

    ring: torch.Tensor
    frac_bits: int
    dtype_index: int


def encode_value(value: Any, job_frac_bits: int) -> EncodedValue:
    """The one encoding of a value that is shared (party.input, the owner's inputs): a float
    at the job's scale, an integer at scale 0 (what `value_problem` checks on arrival)."""
    value = torch.as_tensor(value)
    if value.dtype not in VALUE_DTYPES:
        raise TypeError(f"cannot share tensors of dtype {value.dtype}")
    frac_bits = job_frac_bits if value.is_floating_point() else 0
    return EncodedValue(ring.encode(value.detach(), frac_bits), frac_bits, VALUE_DTYPES.index(value.dtype))


def shape_problem(shape: object, expected: tuple[int, ...] | None = None) -> str | None:
    """Why `shape` (from another process) cannot be used, or None: it must be a list of at most
    MAX_VALUE_DIMS non-negative ints of at most MAX_VALUE_ELEMENTS elements, and `expected`
    where the receiver knows it."""
    if not isinstance(shape, list | tuple) or not all(_is_int(d) for d in shape):
        return f"shape {shape!r} is not a list of integers"
    if len(shape) > MAX_VALUE_DIMS or any(d < 0 for d in shape):
        return f"shape {tuple(shape)} has a negative size or more than {MAX_VALUE_DIMS} dimensions"
    count = 1
    for d in shape:
        count *= d
    if count > MAX_VALUE_ELEMENTS:
        return f"shape {tuple(shape)} has {count} elements, above the bound of {MAX_VALUE_ELEMENTS}"
    if expected is not None and tuple(shape) != tuple(expected):
        return f"shape {tuple(shape)} differs from the expected {tuple(expected)}"
    return None


def value_problem(frac_bits: object, dtype_index: object, job_frac_bits: int | None) -> str | None:
    """Why a value's (frac_bits, dtype index) cannot be used, or None: the index names one of
    VALUE_DTYPES, and the scale is the job's for a float, 0 for an integer (what every honest
    encoder writes; another scale would decode to other numbers). `job_frac_bits` None: a
    receiver that does not know the job's scale yet accepts any valid one for a float."""
    if not _is_int(dtype_index) or not 0 <= dtype_index < len(VALUE_DTYPES):  # type: ignore[operator]
        return f"dtype index {dtype_index!r} is not one of 0..{len(VALUE_DTYPES) - 1}"
    dtype = VALUE_DTYPES[dtype_index]  # type: ignore[index]
    if not _is_int(frac_bits) or not 0 <= frac_bits <= MAX_FRAC_BITS:  # type: ignore[operator]
        return f"frac_bits {frac_bits!r} is not an integer in [0, {MAX_FRAC_BITS}]"
    scale = (frac_bits if job_frac_bits is None else job_frac_bits) if dtype.is_floating_point else 0
    if frac_bits != scale:
        return f"{dtype} with {frac_bits} fractional bits, where this job uses {scale}"
    return None
