"""The dealer's material made by several worker processes, for an owner with the cores.

One MaterialMaker is the dealer's whole CPU bill, in the process that also encrypts and
sends what it makes. `MakerPool` runs `workers` processes, each with its own MaterialMaker
over the same two seeds; a batch of requests is cut into one run of consecutive requests
per worker, the runs are made side by side, and the answers come back in the requests'
order. An answer is a function of the seeds and the request alone (material.MaterialMaker:
what a maker keeps changes no answer), so a request whose linked mask another worker made
derives that mask again and gets the same bits: the pool's answers equal one maker's, and
the dealer's event loop meanwhile encrypts and sends.

The workers are our own processes (spawned, the seeds handed to them at start): what
crosses to them are requests the service has parsed and admitted already, and what comes
back is a file of raw bytes in shared memory and where each tensor lies in it, so no peer's
bytes are ever unpickled. A worker that dies ends the pool
(DealerError naming it), not the process that serves the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import mmap
import multiprocessing
import os
import secrets
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import torch

from mpcrt.dealer.material import MaterialMaker, Request
from mpcrt.errors import DealerError
from mpcrt.messages import dtype_of, spec

MALFORMED = (ValueError, TypeError, KeyError, IndexError, RuntimeError)  # a request whose parameters do not fit

_maker: MaterialMaker | None = None  # the worker process's own maker (set by _start)
_prefix = "mpcrt-dealer-"  # the names of its pool's shared files (set by _start)


def _start(seed0: bytes, seed1: bytes, prefix: str) -> None:
    global _maker, _prefix
    torch.set_num_threads(1)
    _maker, _prefix = MaterialMaker(seed0, seed1), prefix


def _started() -> None:
    """Nothing: a first call, so that the pool starts its processes before the job asks."""


def _make(requests: list[Request], party_id: int) -> tuple[str | None, list[list[Part] | str]]:
    """In a worker: the answers, written to a fresh file in shared memory (its path), and per
    request where each tensor lies in it, or why its parameters do not fit."""
    assert _maker is not None
    answers: list[list[torch.Tensor] | str] = []
    for request in requests:
        try:
            answers.append(_maker.answer(request, party_id))
        except MALFORMED as exc:
            answers.append(f"{type(exc).__name__}: {exc}")
    layout: list[list[Part] | str] = []
    size = 0
    for answer in answers:
        if isinstance(answer, str):
            layout.append(answer)
            continue
        parts = []
        for t in answer:
            code, shape = spec(t)
            parts.append(Part(size, code, shape))
            size += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        layout.append(parts)
    if not size:
        return None, layout
    path = os.path.join(_SHARED_DIR, _prefix + secrets.token_hex(12))
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)  # this user's alone, and a fresh name
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as shared:
            _write(shared, answers, layout)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path, layout


def _write(shared: mmap.mmap, answers: list[list[torch.Tensor] | str], layout: list[list[Part] | str]) -> None:
    """Each answer's tensors at their places in the mapped file (a refused request has none)."""
    memory = np.frombuffer(shared, dtype=np.uint8)
    try:
        for answer, parts in zip(answers, layout, strict=True):
            if isinstance(answer, str):
                continue
            for t, part in zip(answer, parts, strict=True):
                n = t.numel() * t.element_size()
                memory[part.offset:part.offset + n] = t.reshape(-1).numpy().view(np.uint8)
    finally:
        del memory  # no view may outlive the mapping (it could not close), not even in a traceback


@dataclass(frozen=True)
class Part:
    """Where one tensor of an answer lies in a worker's shared file."""

    offset: int
    dtype: str  # its code (mpcrt.messages.spec)
    shape: tuple[int, ...]


_ALIGN = 64  # each tensor from a cache line's start
_SHARED_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()  # memory, where there is one


def _mapped(path: str | None) -> mmap.mmap | None:
    """A worker's shared file, mapped here and unlinked at once: the mapping lives as long as
    the tensors that view it (they keep it), and no name outlives the call."""
    if path is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)  # pages read in place; a write copies its page
    finally:
        os.close(fd)


def _remove(path: str | None) -> None:
    """Unlink a shared file nobody will map (an unlinked one: nothing to do)."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _discard(future: Future) -> None:
    """A run whose answers nobody takes (its caller was cancelled or failed): its file goes."""
    if not future.cancelled() and future.exception() is None:
        _remove(future.result()[0])


class MalformedRequest(Exception):
    """A request the makers could not answer (its parameters do not fit its kind)."""

    def __init__(self, request: Request, why: str) -> None:
        super().__init__(why)
        self.request = request


class MakerPool:
    """`workers` processes making material side by side (see the module's docstring)."""

    def __init__(self, seed0: bytes, seed1: bytes, workers: int) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"dealer workers must be a whole number of processes, at least 1; got {workers!r}")
        self.workers = workers
        self._prefix = f"mpcrt-dealer-{secrets.token_hex(8)}-"  # this pool's files: close() sweeps them
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=(seed0, seed1, self._prefix))
        for _ in range(workers):  # start them now (a second each, torch's import): not at the first request
            self._executor.submit(_started)

    async def answers(self, requests: list[Request], party_id: int) -> list[list[torch.Tensor]]:
        """Party `party_id`'s answers to `requests`, in order (material.MaterialMaker.answer's),
        made in runs of consecutive requests, one per worker. MalformedRequest for a request
        that does not fit its kind; DealerError if a worker died."""
        if not requests:
            return []
        runs = min(self.workers, len(requests))
        size = -(-len(requests) // runs)
        chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
        futures: list[Future] = []
        try:
            futures.extend(self._executor.submit(_make, chunk, party_id) for chunk in chunks)
            made = await asyncio.gather(*map(asyncio.wrap_future, futures))
        except BaseException as exc:
            for future in futures:  # runs still to finish, or finished for nobody: their files go
                future.add_done_callback(_discard)
            if isinstance(exc, BrokenProcessPool):
                raise DealerError(f"a dealer worker process stopped ({exc}); the owner's machine may be out of "
                                  "memory: run with fewer dealer workers") from None
            raise
        out = []
        try:
            for chunk, (path, layout) in zip(chunks, made, strict=True):
                shared = _mapped(path)
                for request, parts in zip(chunk, layout, strict=True):
                    if isinstance(parts, str):
                        raise MalformedRequest(request, parts)
                    out.append([_view(shared, part) for part in parts])
        finally:
            for path, _ in made:  # those a refusal left unmapped
                _remove(path)
        return out

    def close(self) -> None:
        """Stop the workers (a run under way finishes first) and remove any file of this pool
        that is still there."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        for name in os.listdir(_SHARED_DIR):
            if name.startswith(self._prefix):
                _remove(os.path.join(_SHARED_DIR, name))


def _view(shared: mmap.mmap | None, part: Part) -> torch.Tensor:
    count = math.prod(part.shape)
    if not count:
        return torch.empty(part.shape, dtype=dtype_of(part.dtype))
    return torch.frombuffer(shared, dtype=dtype_of(part.dtype), count=count, offset=part.offset).reshape(part.shape)
