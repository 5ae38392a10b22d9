"""Dealer material streamed ahead of a program that repeats one plan (a training job's iterations).

MPC programs have data-independent control flow, so iterations that run the same code in
keyed scopes (`keyed_scope(key)`) ask the dealer for the same requests up to the key in
their message ids. `MaterialStream` records the plan of the first iteration as it runs (on
demand), then, while iteration k runs, fetches the material of iterations k+1..k+window in
the background: party 1's requests leave in one batch per iteration, with no round trip in
the online phase, and both parties derive their seeded parts ahead. At most window + 1
iterations' material is held at once (the running one and those ahead); what an iteration
asked for outside the plan is served on demand and counted, and what the plan had that it
did not ask for is dropped and counted (`Stats.offline`).

Material is named by the whole request, so a wrong guess is never used for another step:
the results are bit-identical to a run on demand with the same seeds. Streaming counts as
an offline phase (`Party.prefetched`): both parties must stream or neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mpcrt.dealer.material import KINDS, Request
from mpcrt.scope import MessageId, keyed_scope

if TYPE_CHECKING:
    from mpcrt.runtime import Party

DEFAULT_WINDOW = 1  # iterations made ahead of the running one


def rekey(request: Request, old: MessageId, new: MessageId) -> Request:
    """`request` as the iteration under scope path `new` asks for it, recorded under `old`:
    its step id and the step ids of the earlier requests it names (masks it multiplies,
    ops.products) move from one prefix to the other; ids outside `old` stay."""
    params = _rekey_params(request.params, old, new)
    mid = _moved(request.mid, old, new)
    return request if mid is request.mid and params is request.params else replace(request, mid=mid, params=params)


def _moved(mid: MessageId, old: MessageId, new: MessageId) -> MessageId:
    return (*new, *mid[len(old):]) if mid[:len(old)] == old else mid


def _rekey_params(params: Any, old: MessageId, new: MessageId) -> Any:
    """Params with every named request (a mask source: (kind, step id, tag, params, shape))
    moved; anything else kept as is."""
    if not isinstance(params, tuple):
        return params
    if (len(params) == 5 and isinstance(params[0], str) and params[0] in KINDS and isinstance(params[1], tuple)
            and isinstance(params[2], str)):
        kind, mid, tag, inner, shape = params
        return (kind, _moved(mid, old, new), tag, _rekey_params(inner, old, new), shape)
    items = tuple(_rekey_params(p, old, new) for p in params)
    return params if all(a is b for a, b in zip(items, params, strict=True)) else items


class MaterialStream:
    """Material of iterations `keys` (each run in `with stream.iteration(key)`, in order),
    made `window` iterations ahead of the running one, from the plan of the last iteration
    once two in a row asked for the same (a training job's first differs: Adam's moments
    start at zero).

    for i in range(first, last):
        with stream.iteration(i + 1):
            ...  # this iteration's work; the next iterations' material is on its way
    """

    def __init__(self, party: Party, keys: Iterable[int], window: int = DEFAULT_WINDOW) -> None:
        if window < 0:
            raise ValueError(f"a stream's window is a count of iterations >= 0, got {window}")
        self.party = party
        self.keys = list(keys)
        self.window = window
        self._plan: list[Request] = []  # the last iteration's requests, in the order it made them
        self._plan_path: MessageId | None = None  # its scope path (None: no iteration ran yet)
        self._repeats = False  # whether the last two iterations asked for the same
        self._ahead: dict[int, list[Request]] = {}  # key -> the requests fetched for it
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
                unused = dealer.discard(self._ahead.pop(key, []))
                self.party.stats.offline.unused += unused
        if self._plan_path is not None:
            expected = {rekey(r, self._plan_path, scope.path) for r in self._plan}
            self._repeats = expected == set(plan)
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
            requests = [rekey(r, self._plan_path, later_path) for r in self._plan]  # type: ignore[arg-type]
            self._ahead[later] = requests
            task = self.party.dealer.prefetch_soon(requests)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.peak_held = max(self.peak_held, len(self._ahead))
