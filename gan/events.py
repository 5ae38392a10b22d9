"""What the edge servers tell the owner while a GAN job runs, as typed records.

On the wire an event is an opaque map (mpcrt.owner_link: `OwnerLink.event`, `on_event`),
named by its "kind"; `send` writes one, `parse` reads one back, refusing anything another
version of lpgan (or modified code) might send: the owner then stops the job with a
message rather than a TypeError. A server's log lines are the runtime's own
(mpcrt.owner_link.ServerLog).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from mpcrt import OwnerLink


class BadEvent(ValueError):
    """An event the owner cannot use (unknown kind, missing or wrongly typed fields)."""


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str]


@dataclass(frozen=True)
class IterationDone(Event):
    """A training iteration ended on the server, with its traffic so far."""

    kind: ClassVar[str] = "iteration"
    iteration: int
    rounds: int
    bytes_sent: int


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """The server saved its shares after `iteration` iterations."""

    kind: ClassVar[str] = "checkpoint"
    iteration: int


@dataclass(frozen=True)
class BatchDone(Event):
    """A synthesis batch ended on the server, with its traffic so far."""

    kind: ClassVar[str] = "batch"
    batch: int
    rounds: int
    bytes_sent: int


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (IterationDone, CheckpointSaved, BatchDone)}


def send(link: OwnerLink, event: Event) -> None:
    link.event(kind=event.kind, **dataclasses.asdict(event))


def parse(fields: dict[str, Any]) -> Event:
    """The event a server sent: one of KINDS, every field an integer >= 0."""
    cls = KINDS.get(fields.get("kind")) if isinstance(fields.get("kind"), str) else None
    if cls is None:
        raise BadEvent(f"an event of unknown kind {str(fields.get('kind'))[:40]!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    if set(fields) != {"kind", *names}:
        raise BadEvent(f"a {cls.kind} event with fields {sorted(fields)[:8]}, expected {sorted(['kind', *names])}")
    values = [fields[n] for n in names]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise BadEvent(f"a {cls.kind} event whose values are not counts: {str(values)[:80]}")
    return cls(*values)
