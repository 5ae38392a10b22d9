"""The data owner as a third role: it shares inputs with the two parties and receives outputs.

The owner holds the data and the model; the two computing parties never see them. For an
input named `key`, party 1's share is a stream keyed by a secret it shares with the owner
(derived from its dealer seed) at a nonce named by the key, so party 1 receives only the
shape, and party 0 receives the value minus that stream. For an output, each party sends
its share and the owner adds them. Keys name values across the job ("real/3",
"d/0.weight"); a key may carry one value only, so that no pad is ever used twice.

`OwnerLink` is a party's end (`party.owner`), `OwnerClient` the owner's end of its links to
both parties. Frames use the runtime's format (mpcrt.messages) with kinds "input",
"output", "event" (the application's progress and other small records, as maps), "error",
and the runtime's own "alive", "log" and "finished".

Neither end trusts what the other sends (docs/SECURITY.md): a value's description is checked
before anything is allocated from it, the owner refuses outputs that disagree with each
other or with what it expects, bounds what it holds unasked, and shows a server's words
only with control characters escaped and labelled as that server's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import torch

from mpcrt import prg, ring
from mpcrt.errors import MPCError
from mpcrt.messages import (
    VALUE_DTYPES,
    MalformedFrame,
    Message,
    decode,
    encode,
    encode_value,
    shape_problem,
    value_problem,
)
from mpcrt.scope import background_task
from transports import Transport, TransportError

if TYPE_CHECKING:
    from mpcrt.runtime import Party
    from mpcrt.shares import ArithmeticShare

OWNER = "owner"
# frames on an owner link: the owner's inputs; a party's outputs, application events (opaque
# maps), error; and the runtime's own: alive (a heartbeat), log (a line of a server's log)
# and finished (its final counts)
INPUT, OUTPUT, EVENT, ERROR, ALIVE, LOG, FINISHED = "input", "output", "event", "error", "alive", "log", "finished"


@dataclass(frozen=True)
class ServerLog:
    """A line of a server's own log, as `on_log` receives it (application events go to
    `on_event`, as maps)."""

    text: str


REFUSED = "refused"  # ServerFailed.kind of a frame the owner would not use
# What the owner holds of outputs it has not asked for yet, per server: honest programs run
# at most a few steps ahead (a model's weights, a window of iterations).
MAX_UNCLAIMED_OUTPUTS = 4096
MAX_UNCLAIMED_BYTES = 1 << 30
MAX_SERVER_TEXT = 4000  # characters of one message or event string a server sends
MAX_EVENT_DEPTH = 16


class OwnerLost(MPCError, ConnectionError):
    """The owner's connection broke, or it sent nothing for longer than the timeout."""


class OwnerFrameRefused(OwnerLost):
    """The owner sent a frame this party cannot use (malformed, or a value it cannot hold)."""


class ServerFailed(MPCError):
    """A computing party reported a failure to the owner, or its connection broke.
    `kind`: the party's exception class, "lost" for a broken connection."""

    def __init__(self, party_id: int, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.party_id = party_id
        self.kind = kind

    @property
    def caused_by_peer(self) -> bool:
        """The party failed because its peer did (a consequence, not the cause)."""
        return self.kind in ("PeerAborted", "PeerLost", "PeerTimeout")


class _Refused(Exception):
    """A server's frame the owner will not use; becomes a ServerFailed naming the server."""


# C0 and C1 controls (but newline and tab), DEL and the bidirectional overrides: what lets text
# move the cursor, recolour, retitle or reorder the owner's terminal. Each shows as its escape.
_UNPRINTABLE = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F),
                *range(0x2066, 0x206A)]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNPRINTABLE if chr(c) not in "\n\t"}


def server_text(text: object, limit: int = MAX_SERVER_TEXT) -> str:
    """A server's words, safe to print on the owner's terminal: control characters escaped
    (a server must not rewrite or recolour the owner's lines), at most `limit` characters."""
    text = text if isinstance(text, str) else repr(text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text.translate(_ESCAPES)


def server_says(name: str, text: object) -> str:
    """`text` labelled as what server `name` says; its further lines are indented under it."""
    return f"{name} says: " + server_text(text).replace("\n", "\n    ")


def _exception_name(cls: object) -> str:
    """The exception class a server names, if it looks like one (it picks how a failure is
    reported, so it is never free text)."""
    return cls if isinstance(cls, str) and cls.isidentifier() and len(cls) <= 64 else ""


def _clean_event(value: Any, depth: int = 0) -> Any:
    """An event's values with every string made safe to print (server_text)."""
    if depth > MAX_EVENT_DEPTH:
        raise _Refused(f"an event nested deeper than {MAX_EVENT_DEPTH} levels")
    if isinstance(value, str):
        return server_text(value)
    if isinstance(value, list):
        return [_clean_event(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_clean_event(k, depth + 1): _clean_event(v, depth + 1) for k, v in value.items()}
    return value


def _name(key: object) -> str:
    """A key as it appears in an error (quoted, escaped, short)."""
    return server_text(repr(key), 200)


class _Expected(NamedTuple):
    """What the owner expects of an output's shares (None: anything well-formed)."""

    shape: tuple[int, ...] | None
    dtype: torch.dtype | None

    def problem(self, meta: tuple, tensor: torch.Tensor) -> str | None:
        if self.dtype is not None and VALUE_DTYPES[meta[1]] != self.dtype:
            return f"a {VALUE_DTYPES[meta[1]]} value where the owner expects {self.dtype}"
        return None if self.shape is None else shape_problem(tuple(tensor.shape), self.shape)


def _output_problem(tensors: list[torch.Tensor], meta: object, frac_bits: int) -> str | None:
    """Why one share of an output cannot be used, or None: one tensor of ring elements and a
    [frac_bits, dtype index] the job could have written."""
    if len(tensors) != 1 or not isinstance(meta, list) or len(meta) != 2:
        return "not one tensor with a [frac_bits, dtype index] description"
    if tensors[0].dtype != torch.int64:
        return f"{tensors[0].dtype} elements, not ring elements (int64)"
    return value_problem(meta[0], meta[1], frac_bits)


def _describe(meta: tuple, tensor: torch.Tensor) -> str:
    return f"{VALUE_DTYPES[meta[1]]} of shape {tuple(tensor.shape)} with {meta[0]} fractional bits"


def input_key(seed1: bytes) -> bytes:
    """The key of party 1's input shares, derived from the seed it shares with the owner."""
    return prg.derive_key(b"owner-input", seed1)


def _party1_share(key: bytes, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Party 1's share of the owner's input `name`: drawn from the stream both derive."""
    return prg.named_ring(shape, key, msgpack.packb(["owner-input", name]))


class OwnerLink:
    """A computing party's connection to the owner: inputs in, outputs and events out."""

    def __init__(self, transport: Transport, party_id: int, seed: bytes, timeout: float) -> None:
        self.transport = transport
        self.party_id = party_id
        self.timeout = timeout
        self._key = input_key(seed) if party_id == 1 else None
        self._inputs: dict[str, tuple[list, torch.Tensor | None]] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._used: set[str] = set()
        self._failure: BaseException | None = None
        self._receiver: asyncio.Task | None = None
        self.party: Party | None = None  # the party it serves (Party calls `serve`)
        self._lost: asyncio.Future[None] | None = None

    def serve(self, party: Party) -> None:
        """Bind this link to the party it serves: its inputs become that party's shares, at
        its scale. One party per link."""
        if self.party is not None and self.party is not party:
            raise ValueError(f"this owner link already serves {self.party!r}")
        self.party = party

    def start(self) -> None:
        if self._receiver is None:
            self._lost = asyncio.get_running_loop().create_future()
            self._receiver = background_task(self._receive(), f"party{self.party_id}-owner")

    async def wait_lost(self) -> BaseException:
        """Returns (with the reason) once the owner's connection is gone."""
        self.start()
        assert self._lost is not None
        await asyncio.shield(self._lost)
        assert self._failure is not None
        return self._failure

    async def receive(self, key: str) -> ArithmeticShare:
        """This party's share of the owner's input `key` (waits for it, up to the timeout)."""
        from mpcrt.shares import ArithmeticShare

        party = self.party
        assert party is not None, "give the link to a Party (Party(..., owner=link))"
        if key in self._used:
            raise ValueError(f"owner input {key!r} was already received; every input needs its own key")
        self._used.add(key)
        self.start()
        if key not in self._inputs:
            if self._failure is not None:
                raise self._failure
            future = self._waiters[key] = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise OwnerLost(f"party {self.party_id} waited {self.timeout:g} s for the owner's input {key!r}; "
                                "is the owner running the same job?") from None
            finally:
                self._waiters.pop(key, None)
        (frac_bits, dtype_index, shape), tensor = self._inputs.pop(key)
        problem = value_problem(frac_bits, dtype_index, party.frac_bits)
        if problem:
            raise OwnerFrameRefused(f"party {self.party_id} refuses the owner's input {key!r}: {problem}")
        share = tensor.clone() if tensor is not None else _party1_share(self._key, key, tuple(shape))  # type: ignore[arg-type]
        return ArithmeticShare(party, share, frac_bits, VALUE_DTYPES[dtype_index])

    def send(self, key: str, share: ArithmeticShare) -> None:
        """Give the owner this party's share of output `key` (the owner adds both). A float
        goes at the job's scale (the owner refuses any other: truncate first)."""
        meta = [share.frac_bits, VALUE_DTYPES.index(share.dtype)]
        problem = value_problem(*meta, self.party.frac_bits if self.party is not None else None)
        if problem:
            raise ValueError(f"output {key!r} cannot go to the owner, which would refuse it: {problem}")
        self._send(encode(OUTPUT, [Message((), key, [share.value])], meta=[meta]))

    def event(self, **fields: Any) -> None:
        """A small record for the owner (progress, checkpoints); msgpack-able values only."""
        self._send(encode(EVENT, fields=fields))

    def log(self, line: str) -> None:
        """A line of this server's log, for the owner's copy of it."""
        self._send(encode(LOG, line=line))

    def alive(self) -> None:
        """Tell the owner this party still works (its timeout counts silence)."""
        self._send(encode(ALIVE))

    def finished(self, stats: dict[str, Any] | None = None) -> None:
        """Tell the owner this party's program ended, with its final counts (Stats.as_dict)."""
        self._send(encode(FINISHED, stats=stats or {}))

    def error(self, message: str, kind: str = "") -> None:
        """Tell the owner why this party's job failed (best effort); `kind`: the exception class."""
        with contextlib.suppress(TransportError):
            self.transport.send(encode(ERROR, message=message, cls=kind))

    def _send(self, frame: list) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            self.transport.send(frame)
        except TransportError as exc:
            raise OwnerLost(f"party {self.party_id} lost its connection to the owner: {exc}") from exc

    async def _receive(self) -> None:
        while True:
            try:
                kind, messages, fields = decode(await self.transport.recv())
                if kind != INPUT:
                    raise MalformedFrame(f"unexpected {kind!r} frame from the owner")
                for message, meta in zip(messages, fields["meta"], strict=True):
                    self._accept(message, meta)
            except OwnerFrameRefused as exc:
                self._fail(exc)
                return
            except (TransportError, MalformedFrame, ValueError, KeyError, TypeError) as exc:
                self._fail(OwnerLost(f"party {self.party_id} lost its connection to the owner: {exc}"))
                return

    def _accept(self, message: Message, meta: object) -> None:
        key = message.label
        if not isinstance(key, str):
            raise OwnerFrameRefused(f"party {self.party_id} refuses an owner's input named {_name(key)}")
        if key in self._inputs or (key in self._used and key not in self._waiters):
            raise OwnerFrameRefused(f"party {self.party_id} refuses the owner's input {_name(key)}: sent twice")
        problem = self._input_problem(message, meta)
        if problem:
            raise OwnerFrameRefused(f"party {self.party_id} refuses the owner's input {_name(key)}: {problem}")
        frac_bits, dtype_index, shape = meta  # type: ignore[misc]
        tensor = message.tensors[0] if message.tensors else None
        self._inputs[key] = ((frac_bits, dtype_index, shape), tensor)
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _input_problem(self, message: Message, meta: object) -> str | None:
        """Why an input frame cannot be used, or None: a well-formed description (the job's
        scale is checked on receive, when the party is known), party 0's ring elements of that
        shape, nothing for party 1 (its share is the keyed stream)."""
        if not isinstance(meta, list) or len(meta) != 3:
            return "no [frac_bits, dtype index, shape] description"
        frac_bits, dtype_index, shape = meta
        problem = value_problem(frac_bits, dtype_index, None) or shape_problem(shape)
        if problem:
            return problem
        if len(message.tensors) != (1 if self.party_id == 0 else 0):
            return f"{len(message.tensors)} tensors, party {self.party_id} takes {1 - self.party_id}"
        tensor = message.tensors[0] if message.tensors else None
        if tensor is not None and (tensor.dtype != torch.int64 or list(tensor.shape) != list(shape)):
            return f"a {tensor.dtype} tensor of shape {tuple(tensor.shape)} where it describes ring elements of {shape}"
        return None

    def interrupt(self, error: BaseException) -> None:
        """The party failed (e.g. its peer aborted): end its waits for the owner's inputs with
        `error` now, not after the timeout; the link itself stays usable (to report it)."""
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
        await self.transport.close()


class OwnerClient:
    """The owner's end: shares inputs with both parties, adds their output shares.

    `on_event(party_id, fields)` receives the parties' application events (maps) and
    `on_log(party_id, line)` their servers' log lines (`ServerLog`); strings are made safe
    to print either way.
    Any party's error, lost connection or frame the owner refuses (see `_take_output`) fails
    every pending and later call with `ServerFailed` naming the party; the owner's own data
    and the other party's link are left as they are. `max_unclaimed_outputs` / `_bytes`: what
    each party may send before the owner asks for it.
    """

    def __init__(self, links: tuple[Transport, Transport], seed1: bytes, frac_bits: int, timeout: float,
                 on_event: Callable[[int, dict], None] | None = None,
                 names: tuple[str, str] = ("party 0", "party 1"), *,
                 on_log: Callable[[int, ServerLog], None] | None = None,
                 max_unclaimed_outputs: int = MAX_UNCLAIMED_OUTPUTS,
                 max_unclaimed_bytes: int = MAX_UNCLAIMED_BYTES) -> None:
        self.links = links
        self.frac_bits = ring.check_frac_bits(frac_bits)
        self.timeout = timeout
        self.names = names
        self.on_event = on_event
        self.on_log = on_log
        self._key = input_key(seed1)
        self._shared: set[str] = set()
        self._outputs: dict[str, list] = {}  # key -> each party's (meta, tensor) or None
        self._expected: dict[str, _Expected] = {}  # what reveal was told of a key
        self._received: tuple[set[str], set[str]] = (set(), set())  # every key each party sent: one value each
        self._unclaimed: tuple[dict[str, int], dict[str, int]] = ({}, {})  # key -> bytes, before reveal asks
        self.max_unclaimed_outputs = max_unclaimed_outputs
        self.max_unclaimed_bytes = max_unclaimed_bytes
        self._waiters: dict[str, asyncio.Future] = {}
        self._failure: ServerFailed | None = None
        self.failures: dict[int, ServerFailed] = {}  # every party's failure, first one first
        self.finished = [False, False]  # a party said its program ended (a finished frame)
        self.final_stats: list[dict | None] = [None, None]  # the counts that came with it
        self._ended = asyncio.Event()  # set when a party finishes or fails: wakes `wait_until`
        self.handler_error: Exception | None = None  # raised by on_event
        self._receivers: list[asyncio.Task] = []
        self._closing: list[asyncio.Task] = []  # links of refused parties
        self._last_frame = [0.0, 0.0]
        # tensor payload per party (docs/COSTS.md, "The owner's links"); frames add small headers
        self.tensor_bytes_sent = [0, 0]
        self.tensor_bytes_received = [0, 0]

    def start(self) -> None:
        if not self._receivers:
            now = asyncio.get_running_loop().time()
            self._last_frame = [now, now]  # when each party last sent anything (outputs, events, heartbeats)
            self._receivers = [background_task(self._receive(i), f"owner-link{i}") for i in (0, 1)]

    def share(self, inputs: dict[str, torch.Tensor]) -> None:
        """Secret-share each tensor under its key (one frame per party; sends, never waits)."""
        self._check()
        to0, to1, meta = [], [], []
        for key, value in inputs.items():
            if key in self._shared:
                raise ValueError(f"input {key!r} was already shared; every input needs its own key")
            encoded = encode_value(value, self.frac_bits)
            shape = list(encoded.ring.shape)
            to0.append(Message((), key, [encoded.ring - _party1_share(self._key, key, tuple(shape))]))
            to1.append(Message((), key, []))
            meta.append([encoded.frac_bits, encoded.dtype_index, shape])
            self._shared.add(key)
        for i, messages in enumerate((to0, to1)):
            frame = encode(INPUT, messages, meta=meta)
            try:
                self.links[i].send(frame)
            except TransportError as exc:
                self._fail(ServerFailed(i, f"lost {self.names[i]}: {exc}", "lost"))
                raise self._failure from exc  # type: ignore[misc]
            self.tensor_bytes_sent[i] += sum(m.nbytes for m in messages)

    async def reveal(self, key: str, timeout: float | None = None, *, shape: tuple[int, ...] | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """The value of output `key` (both parties' shares added and decoded).

        `shape`, `dtype`: what the program sends under this key, where the caller knows it. A
        share that differs, or shares that differ from each other, end the job: ServerFailed
        naming the party (both, where either may be the one that lies)."""
        self.start()
        self._claim(key, _Expected(None if shape is None else tuple(shape), dtype))
        if None in self._outputs.get(key, (None,)):
            self._check()
            loop = asyncio.get_running_loop()
            future = self._waiters.setdefault(key, loop.create_future())
            wait = self.timeout if timeout is None else timeout
            try:
                while not future.done():  # time out only after `wait` seconds in which no party sent anything
                    remaining = min(self._last_frame) + wait - loop.time()
                    if remaining <= 0:
                        slow = [i for i in (0, 1) if self._outputs.get(key, [None, None])[i] is None]
                        self._fail(ServerFailed(slow[0] if len(slow) == 1 else -1,
                                                f"no output {key!r} from {' and '.join(self.names[i] for i in slow)} "
                                                f"and no sign of progress for {wait:g} s; is it still running?",
                                                "timeout"))
                        raise self._failure  # type: ignore[misc]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(future), remaining)
                future.result()
            finally:
                self._waiters.pop(key, None)
        return self._combine(key)

    def _claim(self, key: str, expected: _Expected) -> None:
        """The owner asks for `key`: its shares no longer count as unclaimed, and those already
        here must match what the caller expects."""
        self._expected[key] = expected
        for i in (0, 1):
            self._unclaimed[i].pop(key, None)
        for i, entry in enumerate(self._outputs.get(key, ())):
            problem = entry is not None and expected.problem(*entry)
            if problem:
                raise self._refuse(i, f"output {_name(key)}: {problem}")

    def _combine(self, key: str) -> torch.Tensor:
        """Both shares of `key` added and decoded, once they agree on type and shape."""
        (m0, t0), (m1, t1) = self._outputs.pop(key)
        self._expected.pop(key, None)
        if m0 != m1 or t0.shape != t1.shape:
            error = ServerFailed(-1, f"the parties' shares of output {_name(key)} disagree: {self.names[0]} sent "
                                     f"{_describe(m0, t0)}, {self.names[1]} {_describe(m1, t1)}; one of them "
                                     "lies or runs another program", REFUSED)
            self._fail(error)
            raise error
        frac_bits, dtype_index = m0
        return ring.decode(t0 + t1, frac_bits, VALUE_DTYPES[dtype_index])

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _receive(self, i: int) -> None:
        while True:
            try:
                kind, messages, fields = decode(await self.links[i].recv())
            except (TransportError, MalformedFrame) as exc:
                if not self.finished[i]:
                    self._fail(ServerFailed(i, f"lost {self.names[i]}: {server_text(exc)}", "lost"))
                return
            self._last_frame[i] = asyncio.get_running_loop().time()
            try:
                if not self._take_frame(i, kind, messages, fields):
                    break
            except _Refused as exc:
                self._refuse(i, str(exc))
                return
        if kind == ERROR:
            with contextlib.suppress(TransportError):
                await self.links[i].recv()  # wait for the close, so a lost link is not reported

    def _take_frame(self, i: int, kind: object, messages: list[Message], fields: dict[str, Any]) -> bool:
        """Use one frame of party i; False once the party's link has nothing more to say."""
        if kind == OUTPUT:
            metas = fields.get("meta")
            if not isinstance(metas, list) or len(metas) != len(messages):
                raise _Refused("an output frame whose descriptions do not match its values")
            for message, meta in zip(messages, metas, strict=True):
                self._take_output(i, message, meta)
            return True
        if kind == EVENT:
            return self._take_event(i, fields.get("fields", {}))
        if kind == ALIVE:
            return True  # a heartbeat: its arrival is the progress
        if kind == LOG:
            line = fields.get("line")
            if not isinstance(line, str):
                raise _Refused(f"a log line that is a {type(line).__name__}, not text")
            return self._deliver(i, ServerLog(server_text(line)), self.on_log)
        if kind == FINISHED:
            stats = fields.get("stats", {})
            if not isinstance(stats, dict):
                raise _Refused(f"final counts that are a {type(stats).__name__}, not a map")
            self.final_stats[i] = _clean_event(stats)
            self.finished[i] = True
            self._ended.set()
            return True
        if kind == ERROR:
            words = server_says(f"{self.names[i]} failed, and", fields.get("message", "?"))
            self._fail(ServerFailed(i, words, _exception_name(fields.get("cls", ""))))
            return False
        raise _Refused(f"an unexpected {_name(kind)} frame")

    def _take_output(self, i: int, message: Message, meta: object) -> None:
        """Hold party i's share of an output until the owner asks for it, once checked: one
        well-formed share per key, ring elements, the job's scale, what reveal expects, and
        no more unclaimed outputs than the bounds."""
        key = message.label
        if not isinstance(key, str):
            raise _Refused(f"an output named {_name(key)}")
        problem = _output_problem(message.tensors, meta, self.frac_bits)
        if problem is None and key in self._received[i]:
            problem = "sent twice (an output key carries one value)"
        if problem is None and key in self._expected:
            problem = self._expected[key].problem(tuple(meta), message.tensors[0])  # type: ignore[arg-type]
        if problem:
            raise _Refused(f"output {_name(key)}: {problem}")
        self._received[i].add(key)
        slot = self._outputs.setdefault(key, [None, None])
        slot[i] = (tuple(meta), message.tensors[0].clone())  # type: ignore[arg-type]
        self.tensor_bytes_received[i] += message.nbytes
        if key not in self._expected:
            self._hold_unclaimed(i, key, message.nbytes)
        waiter = self._waiters.get(key)
        if None not in slot and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _hold_unclaimed(self, i: int, key: str, nbytes: int) -> None:
        """Count an output the owner has not asked for; past the bounds the party is refused
        (it runs another program, or far ahead of the owner)."""
        held = self._unclaimed[i]
        held[key] = nbytes
        total = sum(held.values())
        if len(held) > self.max_unclaimed_outputs or total > self.max_unclaimed_bytes:
            raise _Refused(f"{len(held)} outputs ({total} bytes) the owner has not asked for, the last "
                           f"{_name(key)}: above the bound of {self.max_unclaimed_outputs} outputs and "
                           f"{self.max_unclaimed_bytes} bytes; does it run another program?")

    def _take_event(self, i: int, event: object) -> bool:
        """Pass party i's event to on_event, its strings made safe; False if on_event failed."""
        if not isinstance(event, dict):
            raise _Refused(f"an event that is a {type(event).__name__}, not a map")
        return self._deliver(i, _clean_event(event), self.on_event)

    def _deliver(self, i: int, event: Any, handler: Callable[[int, Any], None] | None) -> bool:
        """Hand party i's event to the owner's handler; False if the handler failed."""
        if handler is not None:
            try:
                handler(i, event)
            except Exception as exc:  # the owner's own failure (e.g. its disk): stop the job
                self.handler_error = exc
                self._fail(ServerFailed(-1, f"the owner failed: {exc}", "owner"))
                return False
        return True

    def _refuse(self, i: int, problem: str) -> ServerFailed:
        """End the job for a frame of party i the owner will not use, and stop reading party i
        (its frames must not pile up; closing its link tells it the job is over)."""
        error = ServerFailed(i, f"{self.names[i]} sent {problem}; the owner stops the job (its data and "
                                f"the other server are left as they are)", REFUSED)
        self._fail(error)
        if self._receivers:
            self._receivers[i].cancel()
        self._closing.append(background_task(self.links[i].close(), f"owner-link{i}-close"))
        return error

    def fail(self, error: ServerFailed) -> None:
        """End the job for a failure the owner found elsewhere (e.g. its dealer refused a
        party): every pending and later call raises `error`."""
        self._fail(error)

    def _fail(self, error: ServerFailed) -> None:
        self.failures.setdefault(error.party_id, error)
        self._ended.set()
        if self._failure is None:
            self._failure = error
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(self._failure)
                waiter.exception()

    @property
    def failure(self) -> ServerFailed | None:
        return self._failure

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait (up to `timeout` seconds) until condition() holds, checked each time a party
        finishes or fails (no polling); whether it holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._ended.clear()  # no await since the check: no end can slip between
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), remaining)
        return True

    async def settle(self, timeout: float) -> ServerFailed | None:
        """After a failure, wait (up to `timeout`) until every party has ended or failed, and
        return the cause: a party's own failure or a lost connection before a party's report
        that its peer failed (which usually arrives first)."""
        await self.wait_until(lambda: all(self.finished[i] or i in self.failures for i in (0, 1)), timeout)
        causes = [f for f in self.failures.values() if not f.caused_by_peer] or list(self.failures.values())
        return causes[0] if causes else self._failure

    async def close(self) -> None:
        for task in self._receivers:
            task.cancel()
        for link in self.links:
            await link.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
