"""What the shipper reads and remembers: sources, positions, items, and committed progress.

A source (a journal, or one Envoy access-log stream) is read in order. Each item carries the
position just after it and the source's chain state there; the position stored in PostgreSQL
is the end of the longest prefix of items all written, so a crash re-reads from there
(at-least-once) and the rows' unique keys make the re-read harmless (exactly-once rows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from authz_service.audit.chain import GENESIS
from authz_service.audit.columns import Half

SourceKind = Literal["journal", "access_log"]


@dataclass(frozen=True, slots=True, order=True)
class SourceKey:
    kind: SourceKind
    id: str


class Position(NamedTuple):  # one per record read: a tuple is the cheapest to make
    """Everything before `offset` of segment (journal) or generation (access log) is handled."""

    segment: int
    offset: int


@dataclass(slots=True)
class SourceState:
    """A source's row in gateway_audit_ship_state."""

    key: SourceKey
    position: Position
    seq: int = 0
    last_hash: str = GENESIS
    finished: bool = False
    high_seq: int = 0  # the highest sequence number written (past items still held)


class Item:
    """One record read from a source, or a skipped stretch (row None) that moves its position.

    A plain class: one is made per record read, and a dataclass __init__ costs more.
    """

    __slots__ = ("at_us", "batched", "half", "key", "last_hash", "position", "raw", "row",
                 "seq", "shipped", "source")  # fmt: skip

    def __init__(  # noqa: PLR0917 - positional for speed; every caller names the record's parts
        self,
        source: SourceKey,
        position: Position,
        seq: int,
        last_hash: str,
        half: Half | None = None,
        row: dict[str, Any] | None = None,
        at_us: int = 0,
        raw: bytes = b"",
    ) -> None:
        self.source, self.position, self.seq, self.last_hash = source, position, seq, last_hash
        self.half, self.row = half, row
        self.at_us = at_us  # when it happened (decided_at, started_at): lag and age
        self.raw = raw  # what was read, kept whole if PostgreSQL refuses the row
        self.batched = False  # in the batch being written
        self.shipped = False  # in PostgreSQL (or skipped)
        # (request_id, gateway_type): the join's key
        self.key = (row.get("request_id"), row.get("gateway_type")) if row else (None, None)


@dataclass
class Progress:
    """Per source: the committed state and the items read after it, in order."""

    committed: dict[SourceKey, SourceState] = field(default_factory=dict)
    pending: dict[SourceKey, deque[Item]] = field(default_factory=dict)
    finishing: set[SourceKey] = field(default_factory=set)  # read to the end, writer gone

    def state(self, key: SourceKey, start: Position) -> SourceState:
        return self.committed.setdefault(key, SourceState(key, start))

    def add(self, item: Item) -> None:
        if item.row is None:
            item.shipped = True  # nothing to write; it only moves the position
        self.pending.setdefault(item.source, deque()).append(item)

    def oldest_pending_us(self) -> int | None:
        times = [i.at_us for items in self.pending.values() for i in items if i.row and i.at_us]
        return min(times) if times else None

    def prospective(self) -> list[SourceState]:
        """The state rows to write with the batch: where each source gets if it commits."""
        states = []
        for key, items in self.pending.items():
            committed = self.committed.get(key)
            high = max([committed.high_seq if committed else 0]
                       + [i.seq for i in items if i.row is not None and i.batched])  # fmt: skip
            last = None
            for item in items:
                if not (item.shipped or item.batched):
                    break
                last = item
            if last is not None:
                finished = key in self.finishing and last is items[-1]
                high = max(high, last.seq)
                states.append(
                    SourceState(key, last.position, last.seq, last.last_hash, finished, high)
                )
            elif committed is not None and high > committed.high_seq:
                c = committed
                states.append(SourceState(key, c.position, c.seq, c.last_hash, c.finished, high))
        states.extend(
            SourceState(key, state.position, state.seq, state.last_hash, True, state.high_seq)
            for key, state in self.committed.items()
            if key in self.finishing and not self.pending.get(key) and not state.finished
        )
        return states

    def commit(self, states: list[SourceState]) -> None:
        """The batch is in PostgreSQL: its items are shipped, the sources moved on."""
        for items in self.pending.values():
            for item in items:
                if item.batched:
                    item.batched, item.shipped = False, True
            while items and items[0].shipped:
                items.popleft()
        for state in states:
            self.committed[state.key] = state

    def abandon(self) -> None:
        """The batch failed: nothing of it counts as written."""
        for items in self.pending.values():
            for item in items:
                item.batched = False
