"""The join of decisions and completions, and the offsets each batch may commit."""

from __future__ import annotations

from typing import Any

from authz_service.shipper.join import Joiner, Pair, differs, staged_row
from authz_service.shipper.model import Item, Position, Progress, SourceKey

JOURNAL = SourceKey("journal", "j1")
LOG = SourceKey("access_log", "host:/plant.log")


def _decision(request_id: str, seq: int, **row: Any) -> Item:
    fields = {"request_id": request_id, "gateway_type": "PLANT", "decision": "allow",
              "user_agent": "ua", "client_ip": "10.0.0.1", **row}  # fmt: skip
    return Item(JOURNAL, Position(1, seq * 100), seq, f"h{seq}", "decision", fields, seq)


def _completion(request_id: str, seq: int, **row: Any) -> Item:
    fields = {"request_id": request_id, "gateway_type": "PLANT", "status_code": 200,
              "completed_at": 5, "user_agent": "ua", "client_ip": "10.0.0.1", **row}  # fmt: skip
    return Item(LOG, Position(1, seq * 50), seq, f"c{seq}", "completion", fields, seq)


def test_a_completion_finds_its_held_decision() -> None:
    joiner = Joiner(hold_seconds=2)
    decided = _decision("r1", 1)
    assert joiner.add([decided], now=0) == []
    (pair,) = joiner.add([_completion("r1", 1)], now=1)
    assert pair.decision is decided
    assert joiner.held == {}


def test_the_key_is_request_and_hop() -> None:
    joiner = Joiner(hold_seconds=2)
    joiner.add([_decision("r1", 1, gateway_type="CP")], now=0)
    (pair,) = joiner.add([_completion("r1", 1)], now=0)  # same request id, other hop
    assert pair.decision is None
    assert len(joiner.held) == 1


def test_a_decision_goes_alone_once_its_hold_is_over() -> None:
    joiner = Joiner(hold_seconds=2)
    joiner.add([_decision("r1", 1), _decision("r2", 2)], now=0)
    assert joiner.expired(now=1.9) == []
    assert [p.decision.key for p in joiner.expired(now=2.0) if p.decision] == [
        ("r1", "PLANT"), ("r2", "PLANT"),
    ]  # fmt: skip
    joiner.add([_decision("r3", 3)], now=0)
    assert len(joiner.expired(now=0, everything=True)) == 1  # shutdown: nothing waits


def test_a_merged_row_keeps_the_decisions_shared_facts_and_the_completions_differences() -> None:
    pair = Pair(_decision("r1", 1, user_agent="authz"),
                _completion("r1", 1, user_agent="envoy", client_ip="10.0.0.1"))  # fmt: skip
    row = staged_row(pair)
    assert (row["decision"], row["status_code"], row["user_agent"]) == ("allow", 200, "authz")
    assert row["completion_differs"] == {"user_agent": ["envoy"]}
    assert "decision_differs" not in row


def test_differences_compare_values_not_spellings() -> None:
    mine = {"client_ip": "2001:db8::1", "path": None}
    stored = {"client_ip": "2001:0db8:0:0:0:0:0:1", "path": "/x"}
    assert differs(mine, stored, "completion") == {"path": [None]}, "a NULL is kept as [null]"


def test_a_held_decision_holds_back_its_journals_offset() -> None:
    progress = Progress()
    first, held, third = _decision("a", 1), _decision("b", 2), _decision("c", 3)
    for item in (first, held, third):
        progress.add(item)
    first.batched = third.batched = True  # written now; the held one is not
    (state,) = progress.prospective()
    assert (state.position, state.seq, state.high_seq) == (first.position, 1, 3)
    progress.commit([state])
    assert list(progress.pending[JOURNAL]) == [held, third]
    held.batched = True
    (state,) = progress.prospective()
    assert (state.position, state.seq) == (third.position, 3)


def test_a_failed_batch_counts_for_nothing() -> None:
    progress = Progress()
    item = _decision("a", 1)
    progress.add(item)
    item.batched = True
    progress.abandon()
    assert progress.prospective() == []


def test_a_finished_source_is_marked_once_all_of_it_is_written() -> None:
    progress = Progress()
    item = _decision("a", 1)
    progress.add(item)
    progress.finishing.add(JOURNAL)
    assert progress.prospective() == []
    item.batched = True
    (state,) = progress.prospective()
    assert state.finished
