"""The data owner as a third role: it shares inputs with the two parties and receives outputs.

The owner holds the data and the model; the two computing parties never see them. For an
input named `key`, party 1's share is a stream keyed by a secret it shares with the owner
(derived from its dealer seed) at a nonce named by the key, so party 1 receives only the
shape, and party 0 receives the value minus that stream. For an output, each party sends
its share and the owner adds them. Keys name values across the job ("real/3",
"d/0.weight"); a key may carry one value only, so that no mask is ever used twice.

`OwnerLink` is a party's end (`party.owner`), `OwnerClient` the owner's end of its links to
both parties. Frames use the runtime's format (mpcrt.messages) with kinds "input",
"output", "event" (progress and other small records) and "error".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import torch

from mpcrt import prg, ring
from mpcrt.errors import MPCError
from mpcrt.messages import MalformedFrame, Message, decode, encode
from mpcrt.scope import background_task
from transports import Transport, TransportError

if TYPE_CHECKING:
    from mpcrt.runtime import Party
    from mpcrt.shares import ArithmeticShare

OWNER = "owner"
INPUT, OUTPUT, EVENT, ERROR = "input", "output", "event", "error"
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
          torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


class OwnerLost(MPCError, ConnectionError):
    """The owner's connection broke, or it sent nothing for longer than the timeout."""


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


def input_key(seed1: bytes) -> bytes:
    """The key of party 1's input shares, derived from the seed it shares with the owner."""
    return prg.derive_key(b"owner-input", seed1)


def _mask(key: bytes, name: str, shape: tuple[int, ...]) -> torch.Tensor:
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
        self.party: Party | None = None  # set by the Party it serves
        self._lost: asyncio.Future[None] | None = None

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
        if frac_bits != party.frac_bits and DTYPES[dtype_index].is_floating_point:
            raise ValueError(f"the owner encoded {key!r} with {frac_bits} fractional bits, this job uses "
                             f"{party.frac_bits}")
        share = tensor.clone() if tensor is not None else _mask(self._key, key, tuple(shape))  # type: ignore[arg-type]
        return ArithmeticShare(party, share, frac_bits, DTYPES[dtype_index])

    def send(self, key: str, share: ArithmeticShare) -> None:
        """Give the owner this party's share of output `key` (the owner adds both)."""
        meta = [share.frac_bits, DTYPES.index(share.dtype)]
        self._send(encode(OUTPUT, [Message((), key, [share.value])], meta=[meta]))

    def event(self, **fields: Any) -> None:
        """A small record for the owner (progress, checkpoints); msgpack-able values only."""
        self._send(encode(EVENT, fields=fields))

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
            except (TransportError, MalformedFrame, ValueError, KeyError, TypeError) as exc:
                self._fail(OwnerLost(f"party {self.party_id} lost its connection to the owner: {exc}"))
                return

    def _accept(self, message: Message, meta: list) -> None:
        key = message.label
        if key in self._inputs or (key in self._used and key not in self._waiters):
            raise ValueError(f"the owner sent input {key!r} twice")
        frac_bits, dtype_index, shape = meta
        tensor = message.tensors[0] if message.tensors else None
        if (tensor is None) != (self.party_id == 1) or (tensor is not None and list(tensor.shape) != shape):
            raise ValueError(f"input {key!r} does not match its description")
        self._inputs[key] = ((frac_bits, dtype_index, shape), tensor)
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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

    `on_event(party_id, fields)` receives the parties' events. Any party's error or lost
    connection fails every pending and later call with `ServerFailed` naming the party.
    """

    def __init__(self, links: tuple[Transport, Transport], seed1: bytes, frac_bits: int, timeout: float,
                 on_event: Callable[[int, dict], None] | None = None,
                 names: tuple[str, str] = ("party 0", "party 1")) -> None:
        self.links = links
        self.frac_bits = ring.check_frac_bits(frac_bits)
        self.timeout = timeout
        self.names = names
        self.on_event = on_event
        self._key = input_key(seed1)
        self._shared: set[str] = set()
        self._outputs: dict[str, list] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._failure: ServerFailed | None = None
        self.failures: dict[int, ServerFailed] = {}  # every party's failure, first one first
        self.finished = [False, False]  # a party said its program ended (event done=True)
        self.handler_error: Exception | None = None  # raised by on_event
        self._receivers: list[asyncio.Task] = []
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
            value = torch.as_tensor(value)
            if value.dtype not in DTYPES:
                raise TypeError(f"cannot share tensors of dtype {value.dtype}")
            frac_bits = self.frac_bits if value.is_floating_point() else 0
            encoded = ring.encode(value.detach(), frac_bits)
            shape = list(encoded.shape)
            to0.append(Message((), key, [encoded - _mask(self._key, key, tuple(shape))]))
            to1.append(Message((), key, []))
            meta.append([frac_bits, DTYPES.index(value.dtype), shape])
            self._shared.add(key)
        for i, messages in enumerate((to0, to1)):
            frame = encode(INPUT, messages, meta=meta)
            try:
                self.links[i].send(frame)
            except TransportError as exc:
                self._fail(ServerFailed(i, f"lost {self.names[i]}: {exc}", "lost"))
                raise self._failure from exc  # type: ignore[misc]
            self.tensor_bytes_sent[i] += sum(m.nbytes for m in messages)

    async def reveal(self, key: str, timeout: float | None = None) -> torch.Tensor:
        """The value of output `key` (both parties' shares added and decoded)."""
        self.start()
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
        (m0, t0), (m1, t1) = self._outputs.pop(key)
        if m0 != m1:
            raise ServerFailed(-1, f"the parties' shares of {key!r} differ in type ({m0} and {m1})")
        frac_bits, dtype_index = m0
        return ring.decode(t0 + t1, frac_bits, DTYPES[dtype_index])

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _receive(self, i: int) -> None:
        while True:
            try:
                kind, messages, fields = decode(await self.links[i].recv())
            except (TransportError, MalformedFrame) as exc:
                if not self.finished[i]:
                    self._fail(ServerFailed(i, f"lost {self.names[i]}: {exc}", "lost"))
                return
            self._last_frame[i] = asyncio.get_running_loop().time()
            if kind == OUTPUT:
                for message, meta in zip(messages, fields.get("meta", []), strict=False):
                    if len(message.tensors) != 1 or len(meta) != 2:
                        self._fail(ServerFailed(i, f"{self.names[i]} sent a malformed output {message.label!r}"))
                        return
                    slot = self._outputs.setdefault(message.label, [None, None])
                    slot[i] = (tuple(meta), message.tensors[0].clone())
                    self.tensor_bytes_received[i] += message.nbytes
                    waiter = self._waiters.get(message.label)
                    if None not in slot and waiter is not None and not waiter.done():
                        waiter.set_result(None)
            elif kind == EVENT:
                event = fields.get("fields", {})
                if event.get("alive"):
                    continue  # a heartbeat: progress, nothing to report
                if event.get("done"):
                    self.finished[i] = True
                if self.on_event is not None:
                    try:
                        self.on_event(i, event)
                    except Exception as exc:  # the owner's own failure (e.g. its disk): stop the job
                        self.handler_error = exc
                        self._fail(ServerFailed(-1, f"the owner failed: {exc}", "owner"))
                        return
            elif kind == ERROR:
                self._fail(ServerFailed(i, f"{self.names[i]} failed: {fields.get('message', '?')}",
                                        fields.get("cls", "")))
                with contextlib.suppress(TransportError):
                    await self.links[i].recv()  # wait for the close, so a lost link is not reported
                return
            else:
                self._fail(ServerFailed(i, f"unexpected {kind!r} frame from {self.names[i]}"))
                return

    def _fail(self, error: ServerFailed) -> None:
        self.failures.setdefault(error.party_id, error)
        if self._failure is None:
            self._failure = error
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(self._failure)
                waiter.exception()

    @property
    def failure(self) -> ServerFailed | None:
        return self._failure

    async def settle(self, timeout: float) -> ServerFailed | None:
        """After a failure, wait (up to `timeout`) until every party has ended or failed, and
        return the cause: a party's own failure or a lost connection before a party's report
        that its peer failed (which usually arrives first)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (any(not self.finished[i] and i not in self.failures for i in (0, 1))
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.02)
        causes = [f for f in self.failures.values() if not f.caused_by_peer] or list(self.failures.values())
        return causes[0] if causes else self._failure

    async def close(self) -> None:
        for task in self._receivers:
            task.cancel()
        for link in self.links:
            await link.close()
