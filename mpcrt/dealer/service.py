"""The dealer as a service over mutual TLS: the owner's machine serves each party's corrections.

A party sends the requests of one event-loop tick (or a batch streamed ahead) as one frame;
the service answers with one frame of corrections in the same order, made in this process
or by worker processes (mpcrt.dealer.workers). Every frame passes the job's `Admission`
first: a refused request ends that party's connection with an "error" frame that says why,
and `on_refusal` tells the owner, which ends the job naming the server. The dealer's own
failure (a worker process that died) ends it with a "failed" frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import msgpack
import torch

from mpcrt.dealer.admission import Admission, DealerLimits, DealerRefused
from mpcrt.dealer.client import CorrectionSource
from mpcrt.dealer.material import MaterialMaker, Request, answer_bytes
from mpcrt.dealer.workers import MALFORMED, MakerPool, MalformedRequest
from mpcrt.errors import DealerError
from mpcrt.messages import DATA, MalformedFrame, Message, decode, encode
from mpcrt.scope import background_task, in_slices
from transports import Listener, NetworkModel, Transport, TransportError, WanTransport

REFUSED = "error"  # the frame kind of a refusal: {"message": why}
FAILED = "failed"  # the frame kind of the dealer's own failure: {"message": what}


class DealerService:
    """Answers the parties' requests for one job until closed."""

    def __init__(self, seed0: bytes, seed1: bytes, limits: DealerLimits | None = None,
                 on_refusal: Callable[[DealerRefused], None] | None = None, link: NetworkModel | None = None,
                 workers: int = 0) -> None:
        """link: the owner's link to each party, simulated on what the service sends (None:
        the real link alone). workers: processes that make the material (mpcrt.dealer.workers;
        0: this process makes it, between its other work)."""
        self.maker = MaterialMaker(seed0, seed1)
        self.pool = MakerPool(seed0, seed1, workers) if workers else None
        self.link = link
        self.admission = Admission(limits)
        self.on_refusal = on_refusal
        self.refusals: list[DealerRefused] = []
        self.requests_served = 0
        self.bytes_sent = 0
        self._tasks: set[asyncio.Task] = set()

    async def serve(self, listener: Listener) -> None:
        """Accept connections and serve each until it closes (cancel to stop)."""
        while True:
            try:
                conn = await listener.accept()
            except TransportError:
                continue  # a client that failed authentication: keep serving the others
            task = asyncio.get_running_loop().create_task(self.serve_connection(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def serve_connection(self, conn: Transport) -> None:
        """Answer one party. Over TLS its identity is its certificate's name, never what it
        claims in a request: party 0 must not obtain party 1's corrections."""
        certified = getattr(conn, "peer_name", None)
        if self.link is not None:
            conn = WanTransport(conn, self.link)
        try:
            while True:
                party_id, requests = _parse(await conn.recv(), certified)
                self.admission.admit(requests, party_id)
                answers = await self._answers(requests, party_id)
                conn.send(encode(DATA, answers))
                self.requests_served += len(requests)
                self.bytes_sent += sum(m.nbytes for m in answers)
        except DealerRefused as refused:
            self.refusals.append(refused)
            with contextlib.suppress(TransportError):
                conn.send(encode(REFUSED, message=str(refused)))
            if self.on_refusal is not None:
                self.on_refusal(refused)
        except DealerError as failed:  # the dealer's own failure (a worker process died): say so, then close
            with contextlib.suppress(TransportError):
                conn.send(encode(FAILED, message=str(failed)))
        except TransportError:
            pass
        finally:
            await conn.close()

    async def _answers(self, requests: list[Request], party_id: int) -> list[Message]:
        """The answers to one frame's requests, in order: made by the worker processes, or here
        in slices (the other party's connection and the owner's work go on meanwhile)."""
        if self.pool is None:
            return await in_slices(requests, lambda r: Message(r.mid, r.kind, self._answer(r, party_id)))
        try:
            made = await self.pool.answers(requests, party_id)
        except MalformedRequest as exc:
            raise _malformed(exc.request, party_id, str(exc)) from None
        return [Message(r.mid, r.kind, tensors) for r, tensors in zip(requests, made, strict=True)]

    def _answer(self, request: Request, party_id: int) -> list[torch.Tensor]:
        try:
            return self.maker.answer(request, party_id)
        except MALFORMED as exc:
            raise _malformed(request, party_id, f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.pool is not None:
            self.pool.close()


def _malformed(request: Request, party_id: int, why: str) -> DealerRefused:
    return DealerRefused(party_id, f"party {party_id} sent the dealer a malformed {request.kind} request at "
                                   f"step {request.mid} ({why})"[:500])


def _parse(frame: bytearray, certified: str | None) -> tuple[int, list[Request]]:
    """(party id, requests) of a request frame; DealerRefused for anything else. Over TLS the
    party is its certificate's name, never what it claims: party 0 must not obtain party 1's
    corrections. Without TLS (loopback only) the claim is taken as is."""
    try:
        frame = msgpack.unpackb(frame, use_list=False)  # arrays as tuples: requests hash as they come
        party_id, items = frame["p"], frame["r"]
        if party_id not in (0, 1) or isinstance(party_id, bool) or not isinstance(items, tuple):
            raise ValueError("not a request frame")
        requests = [Request.from_wire(item) for item in items]
    except (ValueError, KeyError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        who = certified or "a party"
        raise DealerRefused(-1, f"{who} sent the dealer a malformed frame ({type(exc).__name__}: {exc})"[:300]) \
            from None
    if certified is not None and certified != f"party{party_id}":
        raise DealerRefused(int(certified[-1]) if certified[-1:] in "01" else -1,
                            f"{certified} asked the dealer for party {party_id}'s material")
    return party_id, requests


ANSWER_FRAME_BYTES = 256 << 20  # dealer answers per frame: large plans travel in several frames


class RemoteDealer(CorrectionSource):
    """Party 1's connection to the dealer service; requests of one tick travel together."""

    def __init__(self, transport: Transport, party_id: int, timeout: float = 60.0) -> None:
        self.transport = transport
        self.party_id = party_id
        self.timeout = timeout
        self._pending: list[tuple[Request, asyncio.Future[list[torch.Tensor]]]] = []
        self._in_flight: deque[list[tuple[Request, asyncio.Future[list[torch.Tensor]]]]] = deque()
        self._receiver: asyncio.Task | None = None
        self._error: DealerError | None = None

    async def fetch(self, request: Request, party_id: int) -> list[torch.Tensor]:
        (answered,) = await self.fetch_many([request], party_id)
        return answered

    async def fetch_many(self, requests: list[Request], party_id: int) -> list[list[torch.Tensor]]:
        """Queue the requests (they leave with the others of this tick) and await the answers."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        if self._receiver is None:
            self._receiver = background_task(self._receive(), "dealer-receiver")
        if not self._pending:
            loop.call_soon(self._flush)
        futures = []
        for request in requests:
            future: asyncio.Future[list[torch.Tensor]] = loop.create_future()
            self._pending.append((request, future))
            futures.append(future)
        deadline = loop.time() + self.timeout
        try:
            return [await asyncio.wait_for(asyncio.shield(f), max(deadline - loop.time(), 0)) for f in futures]
        except TimeoutError:
            self._fail(DealerError(f"the dealer did not answer within {self.timeout:g} s; is it running?"))
            raise self._error from None  # type: ignore[misc]

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch or self._error is not None:
            return
        groups = self._frames_of(batch)
        if self._error is not None:  # an answer too big for any frame: this batch fails with it
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._error)
                    future.exception()
            return
        for group in groups:
            try:
                self.transport.send(msgpack.packb({"p": self.party_id, "r": [r.to_wire() for r, _ in group]}))
            except TransportError as exc:
                self._fail(DealerError(f"lost the connection to the dealer: {exc}"))
                return
            self._in_flight.append(group)

    def _frames_of(self, batch: list) -> list[list]:
        """Split requests so that each frame's answer stays under ANSWER_FRAME_BYTES (the
        answers' sizes are known from the requests); one answer too big for any frame fails."""
        groups: list[list] = [[]]
        size = 0
        for request, future in batch:
            try:
                nbytes = answer_bytes(request, self.party_id)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                self._fail(DealerError(f"malformed {request.kind} request at step {request.mid}: {exc!r}"))
                return []
            if nbytes > self.transport.max_frame_bytes:
                self._fail(DealerError(
                    f"the dealer material of {request.kind} at step {request.mid} is {nbytes / 1e9:.2f} GB, more "
                    f"than one frame carries ({self.transport.max_frame_bytes / 1e9:.2f} GB); split the operation "
                    "into smaller batches"))
                return []
            if groups[-1] and size + nbytes > ANSWER_FRAME_BYTES:
                groups.append([])
                size = 0
            groups[-1].append((request, future))
            size += nbytes
        return groups

    async def _receive(self) -> None:
        while True:
            try:
                frame = await self.transport.recv()
                kind, messages, fields = decode(frame)
            except (TransportError, MalformedFrame) as exc:
                self._fail(DealerError(f"lost the connection to the dealer: {exc}"))
                return
            if kind == REFUSED:
                self._fail(DealerRefused(self.party_id, f"the dealer refused: {str(fields.get('message'))[:500]}"))
                return
            if kind == FAILED:
                self._fail(DealerError(f"the dealer failed: {str(fields.get('message'))[:500]}"))
                return
            batch = self._in_flight.popleft() if self._in_flight else []
            if len(messages) != len(batch):
                self._fail(DealerError(f"the dealer answered {len(messages)} requests, {len(batch)} were asked"))
                return
            for (_, future), message in zip(batch, messages, strict=True):
                if not future.done():
                    future.set_result(message.tensors)

    def _fail(self, error: DealerError) -> None:
        if self._error is None:
            self._error = error
        for batch in [self._pending, *self._in_flight]:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
                    future.exception()

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
        await self.transport.close()
