"""A party of the two-party runtime: the round-batching scheduler and its failure handling.

Every interactive step is a message with a deterministic id (see `scope`). Messages
queued by any task during one event-loop tick leave together as one frame (one round),
flushed by a callback scheduled with `call_soon`; received messages are matched to
their waiters by id, so they may arrive early or late and in any order. A party that
fails tells its peer (abort frame) before closing, and every wait is bounded by the
party's timeout, so a failure on either side surfaces on both sides, never as a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import torch

from mpcrt import prg, ring
from mpcrt.errors import HandshakeError, PeerAborted, PeerLost, PeerTimeout, ProgramMismatch
from mpcrt.messages import (
    ABORT,
    BYE,
    DATA,
    HELLO,
    MAX_VALUE_DIMS,
    VALUE_DTYPES,
    MalformedFrame,
    Message,
    decode,
    encode,
    encode_value,
    shape_problem,
    spec,
    value_problem,
)
from mpcrt.scope import (
    _CURRENT,
    MessageId,
    Scope,
    background_task,
    current_label,
    current_scope,
    install_task_factory,
    op_label,
)
from mpcrt.stats import Stats

if TYPE_CHECKING:
    from mpcrt.dealer.client import DealerClient
    from mpcrt.dealer.material import Request
    from mpcrt.owner_link import OwnerLink
from transports import NetworkModel, Transport, TransportError, WanTransport

T = TypeVar("T")
PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT = 60.0
Program = Callable[..., Awaitable[T]]



def _label_prefixes(label: str) -> list[str]:
    parts = label.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class Party:
    """One of the two computing parties (id 0 or 1), connected to its peer by `transport`.

    The party owns the transport: `run` closes it. `timeout` bounds every wait for the
    peer (seconds without any frame from it while waiting). `prefetched`: the dealer's
    material comes from an offline phase (see ops.policy.choose_method).
    """

    def __init__(self, id: int, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT,
                 frac_bits: int = ring.DEFAULT_FRAC_BITS, session: str = "", dealer: DealerClient | None = None,
                 truncation: str = "dealer", comparison: str = "auto", network: NetworkModel | None = None,
                 owner: OwnerLink | None = None, prefetched: bool = False,
                 owner_network: NetworkModel | None = None) -> None:
        if id not in (0, 1):
            raise ValueError(f"party id must be 0 or 1, got {id!r}")
        self.id = id
        self.peer_id = 1 - id
        self.transport = transport
        self.timeout = timeout
        self.frac_bits = ring.check_frac_bits(frac_bits)
        self.session = session
        # the dealer client counts the offline phase; the party's stats show its counts
        self.stats = Stats(offline=dealer.counts) if dealer is not None else Stats()
        self._dealer = dealer
        self._owner = owner
        if owner is not None:
            owner.serve(self)
        self.truncation = truncation
        self.comparison = comparison  # "auto": chosen per call from `network` (ops.policy.choose_method)
        self.network = network  # the declared link, the same at both parties
        self.owner_network = owner_network  # the declared link from the owner (the dealer) to each party
        # material comes from an offline phase (run with a plan, or the dry run recording
        # one): "auto" then weighs the online phase alone, alike in both runs
        self.prefetched = prefetched
        self._outbox: list[Message] = []
        self._spent: list[object] = []  # see release_later
        self._flush_scheduled = False
        self._labels_in_frame: set[str] = set()
        self._waiting: dict[MessageId, tuple[str, asyncio.Future[Message]]] = {}
        self._inbox: dict[MessageId, Message] = {}
        self._failure: BaseException | None = None
        self._program_done = False
        self._common_key = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peer_hello: asyncio.Future[dict] | None = None
        self._peer_bye: asyncio.Future[None] | None = None
        self._last_progress = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"Party({self.id}, session={self.session!r})"

    @property
    def dealer(self) -> DealerClient:
        """This party's source of correlated randomness (Beaver triples, truncation pairs...)."""
        if self._dealer is None:
            raise RuntimeError("this party has no dealer: products, truncation and comparisons need one; "
                               "use mpcrt.run_local or pass Party(..., dealer=DealerClient(...))")
        return self._dealer

    @property
    def owner(self) -> OwnerLink:
        """The data owner's link (mpcrt.owner_link): `await party.owner.receive(key)` for its inputs,
        `party.owner.send(key, share)` for its outputs."""
        if self._owner is None:
            raise RuntimeError("this party has no link to a data owner; run the job from an owner "
                               "(mpcrt.run_with_owner, `lpgan train`) or share inputs with party.input(..., src=0)")
        return self._owner

    # ---- running a program ----------------------------------------------------------------

    async def run(self, program: Program[T], *args: Any, plan: list[Request] | None = None) -> T:
        """Handshake with the peer, run `program(self, *args)`, say goodbye, close.

        `plan` (from mpcrt.offline.record_plan): fetch all dealer material first (offline);
        the party then counts as `prefetched`, as the dry run that recorded the plan did.
        """
        loop = self._loop = asyncio.get_running_loop()
        install_task_factory(loop)
        self._peer_hello = loop.create_future()
        self._peer_bye = loop.create_future()
        self._last_progress = loop.time()
        self.prefetched = self.prefetched or bool(plan)
        receiver = background_task(self._receive_loop(), f"party{self.id}-receiver")
        if self._owner is not None:
            self._owner.start()
        try:
            await self._hello()
            if plan:
                await self.dealer.prefetch(plan)
            token = _CURRENT.set(Scope())
            try:
                result = await program(self, *args)
            finally:
                _CURRENT.reset(token)
            await self._goodbye()
            return result
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            receiver.cancel()
            await self.transport.close()

    async def _hello(self) -> None:
        seed = os.urandom(prg.KEY_BYTES)
        choices = self._choices()
        self._send_control(HELLO, v=PROTOCOL_VERSION, party=self.id, session=self.session,
                           frac_bits=self.frac_bits, seed=seed, **choices)
        peer = await self._wait_control(self._peer_hello, "its handshake")
        mine = {"v": PROTOCOL_VERSION, "party": self.peer_id, "session": self.session,
                "frac_bits": self.frac_bits, **choices}
        for key, expected in mine.items():
            if peer.get(key) != expected:
                what = {"v": "protocol version", "party": "party id", "session": "session id",
                        "frac_bits": "fixed-point frac_bits", "truncation": "truncation mode",
                        "comparison": "comparison method",
                        "network": "declared network (bandwidth bit/s, RTT s: 'auto' chooses methods by it)",
                        "prefetched": "offline phase (material prefetched or not: 'auto' weighs it)"}[key]
                raise HandshakeError(f"party {self.id} and its peer disagree on the {what}: expected "
                                     f"{expected!r}, the peer has {peer.get(key)!r}; give both the same")
        seeds = (seed, peer["seed"]) if self.id == 0 else (peer["seed"], seed)
        self._common_key = prg.derive_key(b"common", *seeds)

    def _choices(self) -> dict[str, Any]:
        """What decides the protocol each op runs: both parties must agree on it, or their
        programs part ways at the first op that chooses (caught here, before any op)."""
        network = None if self.network is None else [self.network.bandwidth_bps, self.network.rtt_s]
        return {"truncation": self.truncation, "comparison": self.comparison, "network": network,
                "prefetched": self.prefetched}

    async def _goodbye(self) -> None:
        self._flush()
        if self._failure is not None:
            raise self._failure
        if self._inbox:
            ids = sorted(self._inbox)[:5]
            raise ProgramMismatch(f"party {self.peer_id} sent messages {ids} ({self._inbox[ids[0]].label!r}) "
                                  f"that party {self.id}'s program never received; the programs differ")
        self._program_done = True
        self._send_control(BYE)
        await self._wait_control(self._peer_bye, "the end of its program")

    async def _wait_control(self, fut: asyncio.Future[T] | None, what: str) -> T:
        assert fut is not None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            raise PeerTimeout(f"party {self.id} waited {self.timeout:g} s for party {self.peer_id} to reach "
                              f"{what}; is the peer running? raise timeout= if it needs longer") from None

    # ---- the interactive primitive --------------------------------------------------------

    async def exchange(self, outgoing: Sequence[torch.Tensor] | None, *, receive: bool = True,
                       expect: Sequence[tuple[str, tuple[int, ...]]] | None = None,
                       mid: MessageId | None = None) -> list[torch.Tensor] | None:
        """Send `outgoing` to the peer and/or receive the peer's tensors of the same step.

        Exchanges issued in the same event-loop tick share one frame (one round). When both
        directions are used, the peer's tensors must match ours in dtype and shape (or
        `expect`), otherwise the programs differ and ProgramMismatch is raised. `mid`: an id
        reserved with next_id() (when the step also named dealer material), else a fresh one.
        """
        if mid is None:
            mid = current_scope().next_id()
        if outgoing is not None:
            self.send(mid, outgoing)
        if not receive:
            return None
        if expect is None and outgoing is not None:
            expect = [spec(t) for t in outgoing]
        return await self.receive(mid, expect)

    def next_id(self) -> MessageId:
        """Reserve the id of one step (for protocols that derive common randomness from it)."""
        return current_scope().next_id()

    def send(self, mid: MessageId, tensors: Sequence[torch.Tensor]) -> None:
        """Queue the tensors of step `mid` for the peer; they leave at the end of this tick.

        Counted here, not at the flush, so stats read right after an op are complete.
        """
        self._check_usable()
        message = Message(mid, current_label(), list(tensors))
        self._outbox.append(message)
        s = self.stats
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._labels_in_frame.clear()
            s.rounds += 1
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        nbytes = message.nbytes
        s.bytes_sent += nbytes
        for prefix in _label_prefixes(message.label):
            counts = s.by_op[prefix]
            counts.messages_sent += 1
            counts.bytes_sent += nbytes
            if prefix not in self._labels_in_frame:
                self._labels_in_frame.add(prefix)
                counts.rounds += 1

    def send_in_parts(self, parts: Sequence[tuple[MessageId, Sequence[torch.Tensor]]]) -> None:
        """Send the messages of one round as consecutive frames (the first with what this tick
        queued before it): nothing waits between them, so they count as one round, and the
        peer can start on the first while the others are still on the wire."""
        for k, (mid, tensors) in enumerate(parts):
            if k:  # the frame so far leaves now; the next one continues the round (the flush
                # the first send scheduled is still due: it sends the last part)
                self._flush(release=False)
                self._flush_scheduled = True
            self.send(mid, tensors)

    async def receive(self, mid: MessageId,
                      expect: Sequence[tuple[str, tuple[int, ...]]] | None = None) -> list[torch.Tensor]:
        """The peer's tensors of step `mid`, checked against `expect` (dtype code, shape)."""
        label = current_label()
        message = self._inbox.pop(mid, None)
        if message is None:
            message = await self._wait_message(mid, label)
        else:
            # Arrived early. Yield once so the frame this tick queued leaves first: what the
            # caller sends next depends on this message and must not join that frame, or
            # round counts would depend on timing.
            await asyncio.sleep(0)
        if message.label != label:
            raise ProgramMismatch(f"message {mid}: party {self.id} is in {label!r}, party {self.peer_id} "
                                  f"in {message.label!r}; the parties run different programs")
        if expect is not None:
            got = [spec(t) for t in message.tensors]
            if [(c, tuple(s)) for c, s in expect] != got:
                raise ProgramMismatch(f"message {mid} of {label!r}: party {self.id} expects "
                                      f"{_describe(expect)}, party {self.peer_id} sent {_describe(got)}; "
                                      "the parties run different programs or inputs of different shapes")
        for prefix in _label_prefixes(label):
            counts = self.stats.by_op[prefix]
            counts.messages_received += 1
            counts.bytes_received += message.nbytes
        self.stats.bytes_received += message.nbytes
        return message.tensors

    async def _wait_message(self, mid: MessageId, label: str) -> Message:
        self._check_usable()
        if self._peer_bye is not None and self._peer_bye.done():
            raise ProgramMismatch(f"party {self.peer_id} finished its program while party {self.id} waits "
                                  f"for message {mid} of {label!r}; the programs differ")
        assert self._loop is not None
        if not self._waiting:
            self._last_progress = self._loop.time()
        future: asyncio.Future[Message] = self._loop.create_future()
        self._waiting[mid] = (label, future)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._last_progress + self.timeout, self._check_stall)
        try:
            return await future
        finally:
            self._waiting.pop(mid, None)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._loop is None:
            raise RuntimeError("this party is not running a program; use Party.run or mpcrt.run_local")

    # ---- shared tensors ------------------------------------------------------------------

    async def input(self, value: torch.Tensor | Any | None, *, src: int, shape: Sequence[int] | None = None):
        """Secret-share `value`, held by party `src` (the other party passes None).

        Costs one message from src carrying only the shape and type: the non-owner's share is
        drawn from the stream both parties derive from the handshake key and the step id
        (the owner knows the value anyway), and the owner keeps value - that share.
        `shape`: what the other party expects (checked against src's header; without it the
        header need only be well-formed and at most messages.MAX_VALUE_ELEMENTS elements).
        """
        from mpcrt.shares import ArithmeticShare

        if src not in (0, 1):
            raise ValueError(f"src must be 0 or 1, got {src!r}")
        with op_label("input"):
            mid = self.next_id()
            if self.id == src:
                if value is None:
                    raise ValueError(f"party {src} owns this input and must pass its value, not None")
                value = torch.as_tensor(value)
                if shape is not None and tuple(shape) != tuple(value.shape):
                    raise ValueError(f"input of shape {tuple(value.shape)}, where shape={tuple(shape)} was given")
                encoded = encode_value(value, self.frac_bits)
                self.send(mid, [torch.tensor([encoded.frac_bits, encoded.dtype_index, *value.shape])])
                share = encoded.ring - self._common_random(mid, tuple(value.shape))
                frac_bits, dtype = encoded.frac_bits, value.dtype
            else:
                if value is not None:
                    raise ValueError(f"only party {src} provides this input; pass None on party {self.id}")
                frac_bits, dtype, got = await self._input_header(mid, src, shape)
                share = self._common_random(mid, got)
        return ArithmeticShare(self, share, frac_bits, dtype)

    async def _input_header(self, mid: MessageId, src: int,
                            expected: Sequence[int] | None) -> tuple[int, torch.dtype, tuple[int, ...]]:
        """Party src's description of its input, checked before anything is allocated from it:
        a peer that lies about it meets ProgramMismatch, not an IndexError or a huge mask."""
        (header,) = await self.receive(mid)
        if header.dtype != torch.int64 or header.ndim != 1 or not 2 <= len(header) <= 2 + MAX_VALUE_DIMS:
            raise ProgramMismatch(f"message {mid}: party {src} did not send an input header")
        frac_bits, dtype_index, *shape = header.tolist()
        problem = (value_problem(frac_bits, dtype_index, self.frac_bits)
                   or shape_problem(shape, None if expected is None else tuple(expected)))
        if problem:
            raise ProgramMismatch(f"message {mid} ({current_label()!r}): party {self.id} refuses party {src}'s "
                                  f"input header: {problem}")
        return frac_bits, VALUE_DTYPES[dtype_index], tuple(shape)

    def _common_random(self, mid: MessageId, shape: tuple[int, ...]) -> torch.Tensor:
        """Ring elements both parties derive for step `mid` (never reuse a step's id)."""
        return prg.named_ring(shape, self._common_key, msgpack.packb(["common", list(mid)]))

    # ---- frames ----------------------------------------------------------------------------

    def _flush(self, release: bool = True) -> None:
        """Send the outbox as one frame; then free what release_later kept (unless more
        frames of this round follow at once)."""
        self._flush_scheduled = False
        if not self._outbox or self._failure is not None:
            return
        messages, self._outbox = self._outbox, []
        buffers = encode(DATA, messages)
        try:
            self.transport.send(buffers)
        except TransportError as exc:
            self._fail(PeerLost(f"party {self.id} could not send to party {self.peer_id}: {exc}"))
            return
        self.stats.frames_sent += 1
        self.stats.wire_bytes_sent += sum(len(b) for b in buffers)
        if release:
            self._spent.clear()  # the frame is on its way: the wait for the peer absorbs the freeing

    def release_later(self, *objects: object) -> None:
        """Keep `objects` (an op's spent dealer material) alive until this party's next frame
        has left. Freeing hundreds of MB takes milliseconds of page tear-down (a DCF's keys: 13
        ms per 1e5 elements); then it overlaps the wait for the peer instead of delaying the
        op that used them."""
        self._spent.extend(objects)

    def _send_control(self, kind: str, **fields: Any) -> None:
        buffers = encode(kind, **fields)
        self.transport.send(buffers)
        self.stats.frames_sent += 1
        self.stats.wire_bytes_sent += sum(len(b) for b in buffers)

    async def _receive_loop(self) -> None:
        assert self._loop is not None and self._peer_hello is not None and self._peer_bye is not None
        while True:
            try:
                payload = await self.transport.recv()
            except TransportError as exc:
                if not self._peer_bye.done():
                    self._fail(PeerLost(f"party {self.id} lost its connection to party {self.peer_id}: {exc}"))
                return
            self._last_progress = self._loop.time()
            self.stats.frames_received += 1
            self.stats.wire_bytes_received += len(payload)
            try:
                kind, messages, fields = decode(payload)
            except MalformedFrame as exc:
                self._fail(exc)
                return
            if kind == DATA:
                for m in messages:
                    self._accept(m)
            elif kind == HELLO and not self._peer_hello.done():
                self._peer_hello.set_result(fields)
            elif kind == BYE and not self._peer_bye.done():
                self._peer_bye.set_result(None)
                if self._waiting:
                    mid, (label, _) = next(iter(self._waiting.items()))
                    self._fail(ProgramMismatch(f"party {self.peer_id} finished its program while party "
                                               f"{self.id} waits for message {mid} of {label!r}; "
                                               "the programs differ"))
            elif kind == ABORT:
                self._fail(PeerAborted(f"party {self.peer_id} failed: {fields.get('error', '?')}"))
                return
            else:
                self._fail(MalformedFrame(f"unexpected {kind!r} frame from party {self.peer_id}"))
                return

    def _accept(self, m: Message) -> None:
        waiting = self._waiting.pop(m.id, None)  # resolved waiters must not count as waiting
        if waiting is not None:
            if not waiting[1].done():
                waiting[1].set_result(m)
        elif m.id in self._inbox:
            self._fail(ProgramMismatch(f"party {self.peer_id} sent message {m.id} twice"))
        elif self._program_done:
            self._fail(ProgramMismatch(f"party {self.peer_id} sent message {m.id} of {m.label!r} after party "
                                       f"{self.id}'s program had ended; the programs differ"))
        else:
            self._inbox[m.id] = m

    def _check_stall(self) -> None:
        self._watchdog = None
        if not self._waiting or self._failure is not None:
            return
        assert self._loop is not None
        deadline = self._last_progress + self.timeout
        if self._loop.time() >= deadline - 1e-3:
            mid, (label, _) = next(iter(self._waiting.items()))
            self._fail(PeerTimeout(f"party {self.peer_id} sent nothing for {self.timeout:g} s while party "
                                   f"{self.id} waits for message {mid} of {label!r}; is the peer alive? "
                                   "raise timeout= if its steps take longer"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_stall)

    def _fail(self, error: BaseException) -> None:
        """Record the first failure and wake every waiter with it."""
        if self._failure is not None:
            return
        self._failure = error
        for _, future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        if self._owner is not None:
            self._owner.interrupt(error)
        for future in (self._peer_hello, self._peer_bye):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here; waiters re-raise it

    def _abort(self, error: BaseException) -> None:
        """Tell the peer why we stop, unless the failure came from the peer or the link."""
        self._fail(error)
        if isinstance(error, PeerAborted | PeerLost) or self.transport.closed:
            return
        with contextlib.suppress(TransportError):
            self._send_control(ABORT, error=f"{type(error).__name__}: {error}"[:2000])


def _describe(specs: Sequence[tuple[str, Sequence[int]]]) -> str:
    return ", ".join(f"{code}{tuple(shape)}" for code, shape in specs)


@dataclass(frozen=True)
class PartySettings:
    """How the parties of a run compute and which links they declare, alike at both: the
    one record every runner (run_local, run_with_owner, record_plan, the edge server)
    builds its parties and their simulated links from."""

    timeout: float = DEFAULT_TIMEOUT
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    truncation: str = "dealer"
    comparison: str = "auto"
    network: NetworkModel | None = None  # the servers' link, simulated where declared
    owner_network: NetworkModel | None = None  # the owner's (the dealer's) link to each party
    prefetched: bool = False  # the material comes from an offline phase (see ops.policy)
    session: str = ""

    def peer_link(self, party_id: int, transport: Transport,
                  wrap: Callable[[int, Transport], Transport] | None = None) -> Transport:
        """A party's link to its peer as declared: the simulated network around the
        transport, then the caller's own wrapper (outermost)."""
        if self.network is not None:
            transport = WanTransport(transport, self.network)
        return transport if wrap is None else wrap(party_id, transport)

    def dealer_link(self, transport: Transport) -> Transport:
        """A party's connection to the dealer service as declared: the owner's link
        simulated in the requests' direction (the service simulates its answers')."""
        return transport if self.owner_network is None else WanTransport(transport, self.owner_network)

    def party(self, party_id: int, transport: Transport, dealer: DealerClient,
              owner: OwnerLink | None = None) -> Party:
        """Party `party_id` on `transport` (wrapped already: `peer_link`)."""
        return Party(party_id, transport, timeout=self.timeout, frac_bits=self.frac_bits, session=self.session,
                     dealer=dealer, truncation=self.truncation, comparison=self.comparison, network=self.network,
                     owner=owner, prefetched=self.prefetched, owner_network=self.owner_network)
