"""What the dealer agrees to answer: known kinds, each step once per party, bounded sizes.

Privacy does not rest on these rules: every stream is named by the whole request
(material.Request.stream_name), so a forged variant of a request gets material independent of
the real one. They keep a deviating party from using the dealer as a tool at all: a
repeated step is refused (with the party and the step named), and no request, nor a whole
job, makes the owner's machine allocate more than its limits.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import msgpack
import numpy as np

from mpcrt.dealer.material import Request
from mpcrt.errors import DealerError

GiB = 1 << 30


@dataclass(frozen=True)
class DealerLimits:
    """The most material the dealer makes: for one request (every component, and the
    earlier requests' components it is built from, 8 bytes an element) and for the whole
    job (both parties; None: no bound)."""

    request_bytes: int = GiB
    job_bytes: int | None = None


class DealerRefused(DealerError):
    """The dealer refused a request: a repeated step, an unknown kind, a malformed request,
    or more material than the job's limits allow. Names the party and the step."""

    def __init__(self, party_id: int, message: str) -> None:
        super().__init__(message)
        self.party_id = party_id


def material_bytes(request: Request) -> int:
    """What the dealer allocates to answer `request`: its components and the linked ones.
    Raises ValueError (or the kind's own error) for a malformed request."""
    spec = request.spec
    shapes = list(spec.shapes().values())
    shapes += [source.spec.shapes()[component] for source, component in spec.linked().values()]
    total = 0
    for shape in shapes:
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"shape {shape!r}")
        total += 8 * math.prod(shape)
    return total


class StepLedger:
    """The steps answered so far, 8 bytes each: a 64-bit hash keyed by a secret of this
    ledger (no party can aim for a collision; an honest job of 10^7 steps meets one by
    chance with probability 3e-6), in sorted arrays of doubling sizes plus a set of the
    newest, so a long job's ledger stays small and a lookup costs a few binary searches."""

    NEWEST = 1 << 14

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self._newest: set[int] = set()
        self._runs: list[np.ndarray] = []  # sorted uint64, largest first

    def __len__(self) -> int:
        return len(self._newest) + sum(len(run) for run in self._runs)

    def hash(self, step: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(step, key=self._key, digest_size=8).digest(), "little")

    def seen(self, hashes: list[int]) -> list[bool]:
        """For each hash, whether it was added before."""
        found = [h in self._newest for h in hashes]
        if self._runs and hashes:
            wanted = np.array(hashes, dtype=np.uint64)
            for run in self._runs:
                at = np.minimum(np.searchsorted(run, wanted), len(run) - 1)
                found = [f or bool(hit) for f, hit in zip(found, run[at] == wanted, strict=True)]
        return found

    def add(self, hashes: list[int]) -> None:
        self._newest.update(hashes)
        if len(self._newest) >= self.NEWEST:
            run = np.sort(np.fromiter(self._newest, dtype=np.uint64, count=len(self._newest)))
            self._newest.clear()
            while self._runs and len(self._runs[-1]) <= len(run):
                run = np.sort(np.concatenate([self._runs.pop(), run]))
            self._runs.append(run)


class Admission:
    """The dealer's rules for one job: `admit` each batch of a party's requests before
    answering any of them."""

    def __init__(self, limits: DealerLimits | None = None) -> None:
        self.limits = limits or DealerLimits()
        self.material_bytes = 0  # made so far for this job
        self._steps = StepLedger()

    def admit(self, requests: list[Request], party_id: int) -> None:
        """Raises DealerRefused (naming the party and the first bad step) unless every
        request is well-formed, of a known kind, of a step not answered to this party
        before, and within the limits; the batch is then recorded as answered."""
        hashes, total = [], 0
        for request in requests:
            step = _step_name(request)
            size = self._size(request, party_id, step)
            if size > self.limits.request_bytes:
                raise DealerRefused(party_id, f"party {party_id} asked the dealer for {_amount(size)} of "
                                              f"{request.kind} material at step {step}, more than one request may "
                                              f"have ({_amount(self.limits.request_bytes)})")
            total += size
            hashes.append(self._steps.hash(msgpack.packb([party_id, list(request.mid)])))
        seen_before = self._steps.seen(hashes)
        first: dict[int, int] = {}
        repeated = [i for i, h in enumerate(hashes) if seen_before[i] or first.setdefault(h, i) != i]
        if repeated:
            request = requests[repeated[0]]
            raise DealerRefused(party_id, f"party {party_id} asked the dealer twice for step "
                                          f"{_step_name(request)} ({request.kind}); each step is answered once per "
                                          "job: is it running modified code?")
        job = self.limits.job_bytes
        if job is not None and self.material_bytes + total > job:
            raise DealerRefused(party_id, f"party {party_id}'s requests would take the job's dealer material past "
                                          f"its bound of {_amount(job)} (at step {_step_name(requests[0])}); "
                                          "the job asks for more than its plan needs")
        self._steps.add(hashes)
        self.material_bytes += total

    @staticmethod
    def _size(request: Request, party_id: int, step: str) -> int:
        try:
            return material_bytes(request)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise DealerRefused(party_id, f"party {party_id} sent the dealer a malformed {request.kind} request at "
                                          f"step {step} ({type(exc).__name__}: {exc})") from None


def _step_name(request: Request) -> str:
    return f"{request.mid}"[:200]


def _amount(nbytes: int) -> str:
    """Bytes for a message: exact below a megabyte, in MB or GB above."""
    if nbytes < 1_000_000:
        return f"{nbytes} bytes"
    return f"{nbytes / 1e6:.1f} MB" if nbytes < 1_000_000_000 else f"{nbytes / 1e9:.2f} GB"
