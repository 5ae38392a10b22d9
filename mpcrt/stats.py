"""Counts of rounds, messages and bytes, per party and per op label."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields


@dataclass
class OpCounts:
    """Traffic attributed to one op label.

    rounds: frames this party sent that carried a message of the op. Bytes are tensor
    payload (8 per ring element), not framing.
    """

    rounds: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def add(self, other: OpCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class OfflineCounts:
    """Correlated randomness: requests served, bytes received from the dealer, and the
    seconds spent deriving or fetching material (apart from the online phase). Of the
    requests the program asked for: `on_demand` made when asked, `ahead` streamed before
    (mpcrt.stream); `unused`: streamed material no step asked for, dropped; `waited`: seconds
    the program waited for streamed material that had not come yet."""

    requests: int = 0
    on_demand: int = 0
    ahead: int = 0
    unused: int = 0
    waited: float = 0.0
    bytes_received: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Stats:
    """A party's traffic: totals, wire-level frames, and a breakdown by op label.

    Labels nest ("relu/mul"); a message counts under its label and every enclosing one,
    so by_op["relu"] is the whole cost of relu, and rounds are frames, never double counted.
    """

    rounds: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    wire_bytes_sent: int = 0
    wire_bytes_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_op: dict[str, OpCounts] = field(default_factory=lambda: defaultdict(OpCounts))
    offline: OfflineCounts = field(default_factory=OfflineCounts)

    def op(self, label: str) -> OpCounts:
        """Counts of `label`, including everything nested under it ("relu" includes "relu/mul")."""
        return self.by_op.get(label, OpCounts())

    def as_dict(self) -> dict:
        totals = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("by_op", "offline")}
        return {**totals, "by_op": {k: v.as_dict() for k, v in sorted(self.by_op.items())},
                "offline": self.offline.as_dict()}

    def table(self) -> str:
        """A text table of the breakdown by op, for terminals and logs."""
        rows = [("op", "rounds", "msgs out", "msgs in", "bytes out", "bytes in")]
        for label, c in sorted(self.by_op.items()):
            rows.append((label, str(c.rounds), str(c.messages_sent), str(c.messages_received),
                         str(c.bytes_sent), str(c.bytes_received)))
        rows.append(("total", str(self.rounds), "", "", str(self.bytes_sent), str(self.bytes_received)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths, strict=True))) for row in rows)
