"""Dealer material streamed ahead of a program that repeats one plan (a training job's iterations).

MPC programs have data-independent control flow, so iterations that run the same code in
keyed scopes (`keyed_scope(key)`) ask the dealer for the same requests up to the key in
their message ids. `MaterialStream` records the plan of the first iteration as it runs (on
demand), then, while iteration k runs, fetches the material of iterations k+1..k+window in
the background: party 1's requests leave in batches, with no round trip in the online
phase, and both parties derive their seeded parts ahead. The plans of at most window + 1
iterations are held at once (the running one and those ahead), and of their material at
most `window_bytes` ahead of what the program has taken: batches of about `chunk_bytes`
start, in plan order, as the program takes material (a DCGAN iteration's several GB would
otherwise be held twice); a step that needs a batch still held back starts it at once.
What an iteration asked for outside the plan is served on demand and counted, and what the
plan had that it did not ask for is dropped and counted (`Stats.offline`).

Material is named by the whole request, so a wrong guess is never used for another step:
the results are bit-identical to a run on demand with the same seeds. Streaming counts as
an offline phase (`Party.prefetched`): both parties must stream or neither.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mpcrt.dealer.material import Request
from mpcrt.scope import MessageId, keyed_scope

if TYPE_CHECKING:
    from mpcrt.runtime import Party

DEFAULT_WINDOW = 1  # iterations planned ahead of the running one
DEFAULT_WINDOW_BYTES = 512 << 20  # material fetched ahead of what the program has taken
DEFAULT_CHUNK_BYTES = 32 << 20  # material per batch


def held_bytes(request: Request) -> int:
    """About what a party holds of a request's material: 8 bytes per element of each component."""
    return 8 * sum(math.prod(shape) for shape in request.spec.shapes().values())


@dataclass(frozen=True)
class _Fetched:
    """The requests fetched ahead for an iteration: `plan` moved to `path`."""

    requests: list[Request]
    plan: list[Request]
    path: MessageId


@dataclass
class _Batch:
    """Requests fetched together, in plan order, for iteration `key`."""

    key: int
    requests: list[Request]
    nbytes: int
    done: asyncio.Future[None]
    started: bool = False
    sizes: dict[Request, int] = field(default_factory=dict)


class MaterialStream:
    """Material of iterations `keys` (each run in `with stream.iteration(key)`, in order),
    made `window` iterations ahead of the running one, from the plan of the last iteration
    once two in a row asked for the same (a training job's first differs: Adam's moments
    start at zero).

    for i in range(first, last):
        with stream.iteration(i + 1):
            ...  # this iteration's work; the next iterations' material is on its way
    """

    def __init__(self, party: Party, keys: Iterable[int], window: int = DEFAULT_WINDOW,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if window < 0:
            raise ValueError(f"a stream's window is a count of iterations >= 0, got {window}")
        if window_bytes < 1 or chunk_bytes < 1:
            raise ValueError(f"a stream's window_bytes and chunk_bytes are sizes >= 1, got {window_bytes}, "
                             f"{chunk_bytes}")
        self.party = party
        self.keys = list(keys)
        self.window = window
        self.window_bytes, self.chunk_bytes = window_bytes, chunk_bytes
        self._pending: deque[_Batch] = deque()  # planned, not started, in plan order
        self._batch_of: dict[Request, _Batch] = {}  # requests planned and not taken yet
        self._started_bytes = 0  # of batches started, what the program has not taken yet
        self.peak_bytes = 0  # most bytes started and not taken at once
        party.dealer.pacer = self
        self._plan: list[Request] = []  # the last iteration's requests, in the order it made them
        self._plan_path: MessageId | None = None  # its scope path (None: no iteration ran yet)
        self._repeats = False  # whether the last two iterations asked for the same
        self._ahead: dict[int, _Fetched] = {}  # key -> the requests fetched for it
        self._alike: list[list[Request]] = []  # the last plans, each the one before it moved on (the last: _plan)
        self._tasks: set[asyncio.Task] = set()
        self.peak_held = 0  # most iterations' material held at once, the running one's included (<= window + 1)

    @contextmanager
    def iteration(self, key: int) -> Iterator[None]:
        """Run the block in keyed_scope(key), record its plan, and fetch the material of the
        iterations the window reaches once the plan repeats."""
        dealer = self.party.dealer
        with keyed_scope(key) as scope:
            dealer.recording = []
            self._schedule(key, scope.path)
            try:
                yield
            finally:
                plan, dealer.recording = dealer.recording, None
                fetched = self._ahead.pop(key, None)
                planned = fetched.requests if fetched else []
                unused = dealer.discard(planned)
                self.party.stats.offline.unused += unused
                self._forget(key, planned)
        if self._plan_path is not None:
            if fetched and fetched.path == scope.path and any(fetched.plan is alike for alike in self._alike):
                expected = set(planned)  # fetched as a plan like the last one, moved here: the same requests
            else:
                expected = {r.moved(self._plan_path, scope.path) for r in self._plan}
            self._repeats = expected == set(plan)
        self._alike = [*self._alike[-self.window - 1:], plan] if self._repeats else [plan]
        self._plan, self._plan_path = plan, scope.path
        self._schedule(key, scope.path)

    def _schedule(self, key: int, path: MessageId) -> None:
        """Fetch the material of the iterations after `key` (running at scope `path`) that
        the window reaches and nobody asked for yet."""
        if not self._repeats or key not in self.keys:
            return
        position = self.keys.index(key)
        for later in self.keys[position + 1:position + 1 + self.window]:
            if later in self._ahead:
                continue
            later_path = (*path[:-1], later)
            requests = [r.moved(self._plan_path, later_path) for r in self._plan]  # type: ignore[arg-type]
            self._ahead[later] = _Fetched(requests, self._plan, later_path)
            self._plan_batches(later, requests)
        self.peak_held = max(self.peak_held, len(self._ahead))
        self._pump()

    def _plan_batches(self, key: int, requests: list[Request]) -> None:
        """Split an iteration's requests into batches of about chunk_bytes, marked as coming."""
        batch: list[Request] = []
        sizes: dict[Request, int] = {}
        total = 0
        for i, request in enumerate(requests):
            batch.append(request)
            sizes[request] = held_bytes(request)
            total += sizes[request]
            if total >= self.chunk_bytes or i == len(requests) - 1:
                planned = _Batch(key, batch, total, self.party.dealer.expect(batch), sizes=sizes)
                self._pending.append(planned)
                self._batch_of.update(dict.fromkeys(batch, planned))
                batch, sizes, total = [], {}, 0

    def _pump(self) -> None:
        """Start batches in plan order while the material ahead stays within window_bytes
        (one batch always: a batch larger than the window still goes)."""
        while self._pending and (self._started_bytes == 0
                                 or self._started_bytes + self._pending[0].nbytes <= self.window_bytes):
            self._start(self._pending.popleft())

    def _start(self, batch: _Batch) -> None:
        batch.started = True
        self._started_bytes += batch.nbytes
        self.peak_bytes = max(self.peak_bytes, self._started_bytes)
        task = self.party.dealer.fetch_expected(batch.requests, batch.done)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def needed(self, request: Request) -> None:
        """The program waits for `request`: start every held-back batch up to its own."""
        batch = self._batch_of.get(request)
        while batch is not None and not batch.started and self._pending:
            self._start(self._pending.popleft())

    def taken(self, request: Request) -> None:
        """The program took `request`'s material: its bytes no longer count ahead."""
        batch = self._batch_of.pop(request, None)
        if batch is not None and batch.started:
            self._started_bytes -= batch.sizes[request]
            self._pump()

    def _forget(self, key: int, planned: list[Request]) -> None:
        """An iteration is over: drop its batches nobody started, and stop counting what it
        did not take."""
        for batch in [b for b in self._pending if b.key == key]:
            self._pending.remove(batch)
            self.party.dealer.cancel_expected(batch.requests, batch.done)
        for request in planned:
            batch = self._batch_of.pop(request, None)
            if batch is not None and batch.started:
                self._started_bytes -= batch.sizes[request]
        self._pump()
