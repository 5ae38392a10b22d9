"""gan.events: what a server tells the owner round-trips, and anything else is refused."""

from __future__ import annotations

import dataclasses

import pytest

from gan import events
from gan.events import BadEvent, BatchDone, CheckpointSaved, IterationDone


class Link:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def event(self, **fields) -> None:
        self.sent.append(fields)


@pytest.mark.parametrize("event", [IterationDone(3, 120, 5_000_000), CheckpointSaved(4), BatchDone(1, 7, 0)])
def test_events_round_trip(event):
    link = Link()
    events.send(link, event)  # type: ignore[arg-type]
    [fields] = link.sent
    assert fields["kind"] == event.kind and events.parse(fields) == event


@pytest.mark.parametrize("fields", [
    {"kind": "explode"}, {"iteration": 3}, {"kind": 7, "iteration": 3},
    {"kind": "checkpoint", "iteration": 3, "extra": 1}, {"kind": "checkpoint"},
    {"kind": "checkpoint", "iteration": -1}, {"kind": "checkpoint", "iteration": True},
    {"kind": "iteration", "iteration": 1, "rounds": "many", "bytes_sent": 0},
    {"kind": "batch", "batch": 1.5, "rounds": 1, "bytes_sent": 0}])
def test_what_another_version_might_send_is_refused(fields):
    with pytest.raises(BadEvent):
        events.parse(fields)


def test_every_kind_is_known_by_its_name():
    assert {cls.kind for cls in events.KINDS.values()} == set(events.KINDS)
    assert all(dataclasses.is_dataclass(cls) for cls in events.KINDS.values())
