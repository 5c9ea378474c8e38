"""The writer's batching: the bounded queue, decisions held for their completion, merged rows."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from authz_service.audit.batch_queue import BatchQueue
from authz_service.audit.postgres import merged_rows
from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.spool import Entry
from authz_service.audit.writer import hold_for_completion


async def test_queue_refuses_beyond_its_bound_and_batches_in_order() -> None:
    queue: BatchQueue[int] = BatchQueue(bound=5, batch_size=3)
    assert [queue.put(i) for i in range(7)] == [True] * 5 + [False] * 2
    assert await queue.next_batch(1.0, 1.0) == [0, 1, 2]  # full: no waiting
    assert len(queue) == 2
    assert queue.take() == [3, 4]


async def test_queue_waits_for_a_fuller_batch_until_the_fill_wait() -> None:
    queue: BatchQueue[int] = BatchQueue(bound=100, batch_size=10)
    assert await queue.next_batch(0.01, 1.0) == []  # nothing came
    queue.put(1)
    asyncio.get_running_loop().call_later(0.02, queue.put, 2)
    started = time.monotonic()
    assert await queue.next_batch(1.0, 0.1) == [1, 2]
    assert time.monotonic() - started >= 0.09


async def test_a_full_batch_or_wake_ends_the_wait() -> None:
    queue: BatchQueue[int] = BatchQueue(bound=100, batch_size=3)
    queue.put(0)
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, lambda: [queue.put(i) for i in (1, 2)])
    started = time.monotonic()
    assert await queue.next_batch(5.0, 5.0) == [0, 1, 2]
    queue.put(3)
    loop.call_later(0.01, queue.wake)
    assert await queue.next_batch(5.0, 5.0) == [3]
    assert time.monotonic() - started < 2.0


def _decision(request_id: str) -> AuditRecord:
    return AuditRecord(request_id, datetime.now(UTC), "allow", 200)


def test_decisions_without_their_completion_are_held() -> None:
    d1, d2, c1, c3 = (
        _decision("r-1"),
        _decision("r-2"),
        AccessLogCompletion("r-1", 200),
        AccessLogCompletion("r-3", 200),
    )
    now, held = hold_for_completion([d1, d2, c1, c3])
    assert now == [d1, c1, c3]  # r-3's decision was written earlier (or by another worker)
    assert held == [d2]


def test_merged_rows_one_per_request_decision_columns_win() -> None:
    entries: list[Entry] = [
        ("decision", {"request_id": "a", "created_at": "T-decision", "decision": "allow"}),
        ("completion", {"request_id": "b", "created_at": "T-envoy-b", "status_code": 204}),
        ("completion", {"request_id": "a", "created_at": "T-envoy-a", "status_code": 503}),
        ("decision", {"request_id": "c", "decision": "deny"}),
        ("decision", {"request_id": "c", "decision": "error"}),  # a later one of a kind wins
    ]
    assert merged_rows(entries) == [
        {"request_id": "a", "created_at": "T-decision", "decision": "allow", "status_code": 503},
        {"request_id": "c", "decision": "error"},
        {"request_id": "b", "created_at": "T-envoy-b", "status_code": 204},
    ]
