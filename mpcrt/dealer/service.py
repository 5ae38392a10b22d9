"""The dealer as a service over mutual TLS: the owner's machine serves party 1's corrections.

Party 1 sends the requests of one event-loop tick as one frame; the service answers with
one frame of corrections in the same order. Party 0 needs no connection: its material
comes from its seed alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque

import msgpack
import torch

from mpcrt.dealer.client import CorrectionSource
from mpcrt.dealer.material import Request, answer, answer_shapes
from mpcrt.errors import DealerError
from mpcrt.messages import DATA, MalformedFrame, Message, decode, encode
from mpcrt.scope import background_task
from transports import Listener, Transport, TransportError


class DealerService:
    """Answers correction requests from party 1 connections until closed."""

    def __init__(self, seed0: bytes, seed1: bytes) -> None:
        self.seed0, self.seed1 = seed0, seed1
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
        try:
            while True:
                frame = msgpack.unpackb(await conn.recv())
                party_id = frame["p"]
                if certified is not None and certified != f"party{party_id}":
                    raise ValueError(f"{certified} asked for party {party_id}'s material")
                requests = [Request.from_wire(item) for item in frame["r"]]
                answers = [Message(r.mid, r.kind, answer(r, party_id, self.seed0, self.seed1)) for r in requests]
                conn.send(encode(DATA, answers))
                self.requests_served += len(requests)
                self.bytes_sent += sum(m.nbytes for m in answers)
        except (TransportError, ValueError, KeyError, TypeError, msgpack.UnpackException):
            pass
        finally:
            await conn.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


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
        for group in self._frames_of(batch):
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
            nbytes = sum(8 * math.prod(shape) for shape in answer_shapes(request, self.party_id))
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
                _, messages, _ = decode(frame)
            except (TransportError, MalformedFrame) as exc:
                self._fail(DealerError(f"lost the connection to the dealer: {exc}"))
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
