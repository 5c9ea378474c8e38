"""Joins each decision with its completion by (request_id, gateway_type) while both are at hand.

Decisions are read before the access-log lines that could complete them (the shipper reads
the logs up to a snapshot taken before it reads the journals, and a decision is journaled
before Envoy gets its answer), so a completion never waits: it either finds its decision
held here or goes alone. A decision waits up to `hold_seconds` for its completion (a slow
upstream, Envoy's log buffer), then goes alone; its completion later fills its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authz_service.audit.chain import canonical_values
from authz_service.audit.columns import DIFFERS_COLUMN, KEY, SHARED, SHARED_NAMES, Half
from authz_service.shipper.model import Item

Key = tuple[Any, Any]
_SHARED_AT = len(KEY)  # where the shared facts start in a half's canonical values


@dataclass(frozen=True, slots=True)
class Pair:
    """One staged row: a decision, a completion, or both."""

    decision: Item | None
    completion: Item | None

    @property
    def items(self) -> list[Item]:
        return [i for i in (self.decision, self.completion) if i is not None]


def differs(mine: dict[str, Any], stored: dict[str, Any], half: Half) -> dict[str, Any] | None:
    """A half's own values of the shared facts where the stored ones are not the same.

    Compared in canonical form (an address spelled two ways is one address); each value is
    wrapped in a list so that a NULL of the half survives as [null].
    """
    if all(mine.get(name) == stored.get(name) for name in SHARED_NAMES):
        return None  # nearly always: both halves saw the same request
    own = canonical_values(half, mine)[_SHARED_AT : _SHARED_AT + len(SHARED)]
    there = canonical_values(half, {**mine, **stored})[_SHARED_AT : _SHARED_AT + len(SHARED)]
    diff = {name: [mine.get(name)] for name, a, b in zip(SHARED_NAMES, own, there, strict=True)
            if a != b}  # fmt: skip
    return diff or None


def staged_row(pair: Pair) -> dict[str, Any]:
    """The row to insert: the first half's shared facts, the other's differences kept aside."""
    if pair.decision is None:
        assert pair.completion is not None
        assert pair.completion.row is not None
        return dict(pair.completion.row)
    assert pair.decision.row is not None
    row = dict(pair.decision.row)
    if pair.completion is not None:
        assert pair.completion.row is not None
        completion = pair.completion.row
        shared = {name: row.get(name) for name in SHARED_NAMES}
        row |= {k: v for k, v in completion.items() if k not in shared and k != "request_id"}
        row[DIFFERS_COLUMN["completion"]] = differs(completion, shared, "completion")
    return row


@dataclass
class Joiner:
    """Decisions held for their completions; pairs released in the order they became ready."""

    hold_seconds: float
    held: dict[Key, tuple[Item, float]] = field(default_factory=dict)

    def add(self, items: list[Item], now: float) -> list[Pair]:
        ready: list[Pair] = []
        for item in items:
            if item.row is None:
                continue
            if item.half == "decision":
                if item.key in self.held:  # the same decision twice: the first one stands
                    ready.append(Pair(item, None))
                else:
                    self.held[item.key] = (item, now + self.hold_seconds)
            else:
                decision = self.held.pop(item.key, (None, 0.0))[0]
                ready.append(Pair(decision, item))
        return ready

    def expired(self, now: float, *, everything: bool = False) -> list[Pair]:
        """Held decisions whose completion did not come in time (all of them: `everything`)."""
        gone = [k for k, (_, deadline) in self.held.items() if everything or deadline <= now]
        return [Pair(self.held.pop(k)[0], None) for k in gone]
