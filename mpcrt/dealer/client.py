"""The party's side of the dealer: its seed, and where its corrections come from.

Each party derives the free components of its material from its seed. Of the dependent
ones, the party a request names (material.corrected_party: half the requests each) gets
corrections from a `CorrectionSource` (the dealer in this process, the dealer service over
TLS, or a store filled ahead of time: offline phase), and the other derives its shares
from its seed, with no traffic. Time spent making or fetching material is counted as
offline.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

import torch

from mpcrt.dealer.admission import Admission, DealerLimits
from mpcrt.dealer.material import (
    MaterialMaker,
    Request,
    answer_names,
    answer_specs,
    corrected_party,
    derive_parts,
)
from mpcrt.dealer.request import M
from mpcrt.errors import DealerError
from mpcrt.scope import MessageId, background_task, in_slices
from mpcrt.stats import OfflineCounts


class CorrectionSource(ABC):
    """Gives a party what the dealer sends it: its corrections, and public values both
    parties need (such as DCF correction words)."""

    @abstractmethod
    async def fetch(self, request: Request, party_id: int) -> list[torch.Tensor]:
        """This party's dealer answer for `request` (see material.answer)."""

    async def fetch_many(self, requests: list[Request], party_id: int) -> list[list[torch.Tensor]]:
        """Answers for a whole plan (the offline phase); sources that talk batch it."""
        return [await self.fetch(r, party_id) for r in requests]


class LocalDealer(CorrectionSource):
    """The dealer in this process: knows both seeds and computes corrections on demand,
    under the same rules as the service (mpcrt.dealer.admission)."""

    def __init__(self, seed0: bytes, seed1: bytes, limits: DealerLimits | None = None) -> None:
        self.maker = MaterialMaker(seed0, seed1)
        self.admission = Admission(limits)

    async def fetch(self, request: Request, party_id: int) -> list[torch.Tensor]:
        self.admission.admit([request], party_id)
        return self.maker.answer(request, party_id)

    async def fetch_many(self, requests: list[Request], party_id: int) -> list[list[torch.Tensor]]:
        self.admission.admit(requests, party_id)
        return [self.maker.answer(r, party_id) for r in requests]


class Pregenerated(CorrectionSource):
    """Corrections shipped ahead of the online phase; a request it lacks is an error."""

    def __init__(self, store: dict[Request, list[torch.Tensor]]) -> None:
        self.store = store

    async def fetch(self, request: Request, party_id: int) -> list[torch.Tensor]:
        try:
            return self.store.pop(request)
        except KeyError:
            raise DealerError(f"no pre-generated material for {request.kind} at step {request.mid}; the "
                              "program asked for something its dry run did not (data-dependent control flow?)") \
                from None


class Pacer(Protocol):
    """Paces material fetched ahead (mpcrt.stream): told when the program needs a request
    whose batch may not have started, and when it takes a request's material."""

    def needed(self, request: Request) -> None: ...

    def taken(self, request: Request) -> None: ...


class DealerClient:
    """One party's access to correlated randomness."""

    def __init__(self, party_id: int, seed: bytes, source: CorrectionSource) -> None:
        if party_id not in (0, 1):
            raise ValueError(f"party id must be 0 or 1, got {party_id!r}")
        if source is None:
            raise ValueError(f"party {party_id} needs a correction source (the dealer)")
        self.party_id = party_id
        self.seed = seed
        self.source = source
        self.counts = OfflineCounts()  # the party's stats.offline: requests, bytes, seconds
        self.recording: list[Request] | None = None  # the requests `get` is asked for, while set (mpcrt.stream)
        self._ready: dict[Request, Any] = {}  # request -> its prepared material
        self._coming: dict[Request, asyncio.Future[None]] = {}  # requests of a prefetch under way
        self._dropped: set[Request] = set()  # of those, the ones discarded before they came
        self._streamed_steps: dict[MessageId, Request] = {}  # step -> request streamed ahead
        self.pacer: Pacer | None = None  # set by a stream that holds batches back (mpcrt.stream)

    async def get(self, request: Request[M]) -> M:
        """This party's material for `request`, as its kind's Material dataclass."""
        if self.recording is not None:
            self.recording.append(request)
        coming = self._coming.get(request)
        if coming is not None and not coming.done():
            if self.pacer is not None:
                self.pacer.needed(request)  # its batch starts now if the stream held it back
            start = time.perf_counter()
            try:
                await asyncio.shield(coming)
            finally:
                self.counts.waited += time.perf_counter() - start
        if coming is not None:
            coming.result()  # raises what the prefetch met
        ready = self._ready.pop(request, None)
        if ready is not None:
            self._streamed_steps.pop(request.mid, None)
            self.counts.ahead += 1
            if self.pacer is not None:
                self.pacer.taken(request)
            return ready
        streamed = self._streamed_steps.get(request.mid)
        if streamed is not None:
            raise DealerError(
                f"{request.kind} at step {request.mid} is not what the plan streamed ahead for that step "
                f"({str(streamed.spec)[:160]}); a program run in an mpcrt.stream.MaterialStream "
                "must repeat its plan once two iterations agreed (a public value that drifts between iterations "
                "and changes an op's parameters breaks that: fix its encoding, see ops.scale's exponent), or run "
                "without streaming")
        self.counts.on_demand += 1
        start = time.perf_counter()
        fetched = [await self.source.fetch(request, self.party_id)] if self._needs_dealer(request) else [[]]
        parts = self._assemble_one((request, fetched[0]))
        self._count(1, start, fetched)
        return parts

    async def prefetch(self, requests: list[Request], background: bool = False) -> None:
        """The offline phase: make or fetch all material of a plan now, so the online phase
        only reads it. Counted in stats.offline. `background`: derive the seeded parts in
        slices between the online phase's work (mpcrt.stream; scope.in_slices)."""
        start = time.perf_counter()
        asked = [r for r in requests if self._needs_dealer(r)]
        answers = dict(zip(asked, await self.source.fetch_many(asked, self.party_id), strict=True)) if asked else {}
        fetched = [answers.get(r, []) for r in requests]
        pairs = list(zip(requests, fetched, strict=True))
        made = await in_slices(pairs, self._assemble_one) if background else [self._assemble_one(p) for p in pairs]
        self._ready.update(zip(requests, made, strict=True))
        self._count(len(requests), start, fetched)

    def expect(self, requests: list[Request]) -> asyncio.Future[None]:
        """Mark `requests` as one batch on its way: `get` for one of them waits for the batch
        (and meets its error) instead of asking again. `fetch_expected` starts it, or
        `cancel_expected` drops it unstarted."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for request in requests:
            self._coming[request] = done
            self._streamed_steps[request.mid] = request
        return done

    def cancel_expected(self, requests: list[Request], done: asyncio.Future[None]) -> None:
        """Forget a batch that `expect` marked and nobody started (its steps are over)."""
        for request in requests:
            if self._coming.get(request) is done:
                del self._coming[request]
            self._dropped.discard(request)
            self._streamed_steps.pop(request.mid, None)
        if not done.done():
            done.set_result(None)

    def fetch_expected(self, requests: list[Request], done: asyncio.Future[None]) -> asyncio.Task:
        """Fetch a batch that `expect` marked, in the background; `done` resolves with it."""

        async def fetch() -> None:
            try:
                await self.prefetch(requests, background=True)
            except BaseException as exc:  # every waiting get meets it; nobody waiting is fine
                done.set_exception(exc if isinstance(exc, Exception) else DealerError(f"prefetch stopped: {exc!r}"))
                done.exception()
                if not isinstance(exc, Exception):
                    raise
            else:
                done.set_result(None)
                for request in requests:  # a failed batch stays: its steps' gets meet the error
                    if self._coming.get(request) is done:
                        del self._coming[request]
                    if request in self._dropped:
                        self._dropped.discard(request)
                        self._ready.pop(request, None)

        return background_task(fetch(), "dealer-prefetch")  # takes no id from the program's scope

    def discard(self, requests: list[Request]) -> int:
        """Drop the material of `requests` nobody asked for (a plan's steps a run skipped);
        returns how many were dropped."""
        dropped = 0
        for request in requests:
            self._streamed_steps.pop(request.mid, None)
            coming = self._coming.get(request)
            if coming is not None and coming.done():  # a batch that failed
                del self._coming[request]
            elif coming is not None:
                self._dropped.add(request)
                dropped += 1
            else:
                dropped += self._ready.pop(request, None) is not None
        return dropped

    def _needs_dealer(self, request: Request) -> bool:
        """Whether the dealer sends this party anything for `request` (else its seed makes all:
        a kind of free components alone, such as an opening's mask, needs no round trip)."""
        return bool(answer_names(request, self.party_id))

    def _assemble_one(self, asked: tuple[Request, list[torch.Tensor]]) -> Any:
        """This party's material for a request: its seeded parts and what the dealer sent."""
        request, answered = asked
        spec = request.spec
        seeded = (*spec.free, *spec.dependent) if corrected_party(request) != self.party_id else spec.free
        parts = derive_parts(request, self.seed, seeded)
        if answered or answer_names(request, self.party_id):
            self._check(request, answered)
            widened = [t if t.dtype == torch.int64 else t.to(torch.int64) for t in answered]  # narrow: low bits matter
            parts.update(zip(answer_names(request, self.party_id), widened, strict=True))
        return spec.prepare(parts, self.party_id)

    def _check(self, request: Request, fetched: list[torch.Tensor]) -> None:
        expected = answer_specs(request, self.party_id)
        got = [(tuple(t.shape), t.dtype) for t in fetched]
        if got != expected:
            raise DealerError(f"the dealer sent material of shapes {_specs(got)} for {request.kind} at step "
                              f"{request.mid}, expected {_specs(expected)}; is it serving the same program?")

    def _count(self, requests: int, start: float, fetched: list[list[torch.Tensor]]) -> None:
        self.counts.bytes_received += sum(t.numel() * t.element_size() for answered in fetched for t in answered)
        self.counts.requests += requests
        self.counts.seconds += time.perf_counter() - start


def _specs(specs: list[tuple[tuple[int, ...], torch.dtype]]) -> str:
    return "[" + ", ".join(f"{shape}" + ("" if dtype == torch.int64 else f" {str(dtype)[6:]}")
                           for shape, dtype in specs) + "]"
