"""What a protocol asks the dealer for: a step's id and a typed spec of one kind of material.

A `Request` is (step id, spec). Each kind of material is a frozen dataclass (`Spec`
subclass, mpcrt.dealer.kinds) whose fields are its parameters and whose `Material` is
what the protocol reads online; `MaskRef` names a mask an earlier request made. On the
wire a request is the array (kind, step id, fields), nested dataclasses as arrays of
their fields; `Request.from_wire` checks every field against its declared type, so a
peer's request is only ever one of the specs below, with ints where ints belong.

Every random stream of a request is named by its SHA-256 over that wire form
(`Request.stream_name`): all parameters included, so a request that differs in anything names
other streams.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, Union

import msgpack
import torch

from mpcrt.scope import MessageId

Shape = tuple[int, ...]
M = TypeVar("M")

KINDS: dict[str, type[Spec]] = {}  # wire name -> spec class, filled as kinds.py defines them


class Spec(ABC, Generic[M]):
    """One kind of material: its parameters (the subclass's dataclass fields) and how its
    components split. Free components are random (each party derives its share from its
    seed), dependent ones are functions of the free ones (party 0 derives its share, party
    1 receives a correction), public ones are sent to both. A subclass declares `kind` (its
    wire name) and `Material` (what `prepare` gives the protocol)."""

    kind: ClassVar[str]
    Material: ClassVar[type]
    free: ClassVar[tuple[str, ...]] = ()
    dependent: ClassVar[tuple[str, ...]] = ()
    public: ClassVar[tuple[str, ...]] = ()  # made by the dealer from both parties' free parts, sent to both
    xor: ClassVar[frozenset[str]] = frozenset()  # components XOR-shared as packed words, not additive
    # free components that one party alone knows: the value is that party's own derivation
    # (the other party derives but never uses its copy)
    private: ClassVar[dict[str, int]] = {}
    # free components later requests may name (`linked`): the dealer keeps their values a while
    linkable: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            if cls.kind in KINDS:
                raise TypeError(f"two dealer kinds are called {cls.kind!r}")
            KINDS[cls.kind] = cls
        for name in ("shapes", "widths"):  # read several times per request by the dealer and both parties
            if name in cls.__dict__:
                setattr(cls, name, _made_once(cls.__dict__[name], f"_made_{cls.__name__}_{name}"))

    @abstractmethod
    def shapes(self) -> dict[str, Shape]:
        """Shape of every component."""

    def dependent_values(self, free: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The secret dependent values, from the full free values (and the linked ones)."""
        return {}

    def linked(self) -> dict[str, tuple[Request, str]]:
        """Free components of earlier requests this kind's dependent values are made from
        (the dealer rebuilds them from the seeds; the parties never see them). A mask maker's
        mask reaches `dependent_values` as its MaskParts (kinds.is_mask), any other as its value."""
        return {}

    def public_values(self, free0: dict[str, torch.Tensor], free1: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Values both parties receive, from each party's own free parts (none by default);
        the linked values (`linked`) are in both dicts."""
        return {}

    def widths(self) -> dict[str, int]:
        """Dependent components the protocol uses only times 2^(64 - w), with their w: only
        the low w bits of a share matter, so party 0 derives and party 1 receives w-bit
        integers. The rest are full ring elements (64)."""
        return {}

    def prepare(self, parts: dict[str, torch.Tensor], party_id: int) -> M:
        """A party's material in the form its protocol reads online, made when the material
        is (the offline phase, when prefetched): work moved out of the online phase."""
        return self.Material(**parts)

    def to_wire(self) -> tuple:
        return _encode(self)


def _made_once(method: Callable[[Any], dict], key: str) -> Callable[[Any], dict]:
    """A spec's method of no arguments whose result (a dict nobody changes) depends on the
    spec's fields alone: made on the first call, then kept on the (frozen) instance under
    `key` (one per defining class: an override that calls its parent's keeps both)."""

    @functools.wraps(method)
    def once(self: Any) -> dict:
        made = self.__dict__.get(key)
        if made is None:
            made = method(self)
            object.__setattr__(self, key, made)
        return made
    return once


@dataclasses.dataclass(frozen=True)
class Request(Generic[M]):
    """What one step needs: its message id and the spec of the material."""

    mid: MessageId
    spec: Spec[M]

    @property
    def kind(self) -> str:
        return self.spec.kind

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        """The dataclass's hash of (mid, spec), made once: a spec nests the requests it names,
        and every dict of material, plan and ledger hashes each request several times."""
        return hash((self.mid, self.spec))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cached hash: a string's hash differs from process to process."""
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the request's wire form: names its streams."""
        return hashlib.sha256(msgpack.packb(("mpcrt-dealer", *self.to_wire()))).digest()

    @functools.cached_property
    def _wire(self) -> tuple:
        return (self.spec.kind, self.mid, self.spec.to_wire())

    @property
    def stream_name(self) -> bytes:
        """What names this request's streams, one per seed (each component a range of it:
        material.seeded_parts): the digest of the whole request."""
        return self.digest

    def to_wire(self) -> tuple:
        """(kind, step id, fields): msgpack writes the tuples as arrays (made once: the
        digest, the dealer's client and the stream's moves all read it)."""
        return self._wire

    @staticmethod
    def from_wire(item: Any) -> Request:
        """The request a peer sent, as msgpack read it (arrays as tuples or lists); ValueError
        unless it is (a known kind, a step id, that kind's fields of their declared types)."""
        return _decode_request(item, nested=False)

    def moved(self, old: MessageId, new: MessageId) -> Request:
        """This request with its step id, and those of the requests its spec names, moved
        from the prefix `old` to `new` (ids outside `old` stay): what the iteration under
        scope path `new` asks for where one under `old` asked for this."""
        mid = (*new, *self.mid[len(old):]) if self.mid[:len(old)] == old else self.mid
        spec = _map_requests(self.spec, lambda r: r.moved(old, new))
        return self if mid == self.mid and spec is self.spec else Request(mid, spec)


@dataclasses.dataclass(frozen=True)
class MaskRef:
    """A mask an earlier request made (a truncation's or an opening's), viewed in `shape`
    (its own, or another with the same elements in the same order)."""

    request: Request
    shape: Shape

    @property
    def spec(self) -> Any:
        return self.request.spec

    def reshaped(self, shape: Shape) -> MaskRef:
        return MaskRef(self.request, tuple(shape))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """A dataclass's field names (None for any other type)."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None


def _encode(value: Any) -> Any:
    if isinstance(value, Request):
        return value.to_wire()
    names = _field_names(type(value))
    if names is not None:
        return tuple(_encode(getattr(value, name)) for name in names)
    if isinstance(value, tuple):
        return value if all(type(v) is int for v in value) else tuple(_encode(v) for v in value)
    return value


def _map_requests(value: Any, move: Any) -> Any:
    """A dataclass with every Request inside it (directly or in nested dataclasses) passed
    through `move`; the same object where nothing changed (at once for a class whose fields
    cannot hold a request: a stream moves every request of a plan each iteration)."""
    if isinstance(value, Request):
        return move(value)
    cls = type(value)
    if not _may_name_requests(cls):
        return value
    changed = {}
    for name in _field_names(cls):  # type: ignore[union-attr]
        old = getattr(value, name)
        new = _map_requests(old, move)
        if new is not old:
            changed[name] = new
    return dataclasses.replace(value, **changed) if changed else value


@functools.cache
def _may_name_requests(cls: type) -> bool:
    """Whether instances of cls are dataclasses whose fields may hold a Request."""
    return dataclasses.is_dataclass(cls) and names_requests(cls)


@functools.cache
def _hints(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


@functools.cache
def names_requests(cls: type) -> bool:
    """Whether a spec class has fields that name other requests."""
    return any(_mentions_request(hint) for _, hint in _hints(cls))


def _mentions_request(hint: Any) -> bool:
    if hint in (Request, MaskRef):
        return True
    if dataclasses.is_dataclass(hint):
        return any(_mentions_request(h) for _, h in _hints(hint))
    return any(_mentions_request(a) for a in typing.get_args(hint) if a is not Ellipsis)


def _decode_request(item: Any, nested: bool) -> Request:
    if not (isinstance(item, tuple | list) and len(item) == 3):
        raise ValueError("a dealer request is an array of kind, step id and fields")
    kind, mid, fields = item
    spec_class = KINDS.get(kind) if isinstance(kind, str) else None
    if spec_class is None:
        raise ValueError(f"unknown dealer kind {str(kind)[:40]!r}")
    if nested and names_requests(spec_class):  # keeps the nesting one level deep
        raise ValueError(f"a {kind} request cannot be named inside another request")
    if not (isinstance(mid, tuple | list) and all(_is_int(i) for i in mid)):
        raise ValueError(f"{kind} request: malformed step id {str(mid)[:60]}")
    try:
        return Request(tuple(mid), _decode(fields, spec_class, kind))
    except ValueError as exc:
        raise ValueError(f"{kind} request at step {tuple(mid)}: {exc}"[:300]) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _decode(value: Any, hint: Any, where: str) -> Any:
    """`value` read from the wire as the type `hint` (ValueError naming `where` otherwise)."""
    return _reader(hint)(value, where)


Reader = Callable[[Any, str], Any]


@functools.cache
def _reader(hint: Any) -> Reader:
    """The function that reads a wire value as the type `hint`, made once per type."""
    if hint is Request:
        return lambda value, where: _decode_request(value, nested=True)
    if hint is int:
        return _read_int
    if hint is str or hint is type(None):
        def read_plain(value: Any, where: str) -> Any:
            if isinstance(value, hint):
                return value
            raise ValueError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return read_plain
    if dataclasses.is_dataclass(hint):
        return _dataclass_reader(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [_reader(option) for option in args]

        def read_union(value: Any, where: str) -> Any:
            for read in options:
                try:
                    return read(value, where)
                except ValueError:
                    continue
            raise ValueError(f"{where}: {str(value)[:60]} is none of {hint}")
        return read_union
    if origin is tuple:
        return _tuple_reader(args)
    raise TypeError(f"no wire form for {hint}")


def _read_int(value: Any, where: str) -> int:
    if _is_int(value):
        return value
    raise ValueError(f"{where}: expected int, got {type(value).__name__}")


def _dataclass_reader(cls: type) -> Reader:
    fields = [(name, _reader(hint)) for name, hint in _hints(cls)]

    def read_dataclass(value: Any, where: str) -> Any:
        if not (isinstance(value, tuple | list) and len(value) == len(fields)):
            raise ValueError(f"{where}: expected {len(fields)} fields of {cls.__name__}")
        out = cls(*(read(v, f"{where}.{name}") for v, (name, read) in zip(value, fields, strict=True)))
        if isinstance(out, MaskRef) and not getattr(out.spec, "makes_masks", False):
            raise ValueError(f"{where}: a {out.request.kind} request makes no mask a product may name")
        return out
    return read_dataclass


def _tuple_reader(args: tuple) -> Reader:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _reader(args[0])
        of_ints = args[0] is int

        def read_many(value: Any, where: str) -> tuple:
            if not isinstance(value, tuple | list):
                raise ValueError(f"{where}: expected an array, got {type(value).__name__}")
            if of_ints and all(type(v) is int for v in value):  # shapes, coefficients: the common case
                return tuple(value)
            return tuple(item(v, where) for v in value)
        return read_many
    items = [_reader(a) for a in args]

    def read_fixed(value: Any, where: str) -> tuple:
        if not isinstance(value, tuple | list):
            raise ValueError(f"{where}: expected an array, got {type(value).__name__}")
        if len(value) != len(items):
            raise ValueError(f"{where}: expected {len(items)} items, got {len(value)}")
        return tuple(read(v, where) for v, read in zip(value, items, strict=True))
    return read_fixed
