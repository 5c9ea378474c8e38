"""Leased budgets against the real Redis: several workers never overspend, leases go back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_async

from authz_service.adapters.budget_lease import LeasedBudgetStore
from authz_service.adapters.redis_budget import RedisBudgetStore
from authz_service.ports import BudgetConsumption, BudgetWindow
from devstack import RedisService
from tests.support.waiting import eventually_async

WORKERS = 3
MAX_UNITS = 50


@pytest.fixture
async def raw(redis_service: RedisService) -> AsyncIterator[redis_async.Redis]:
    client = redis_async.Redis.from_url(redis_service.url)
    yield client
    await client.aclose()


def _workers(url: str, seconds: float = 30.0) -> list[LeasedBudgetStore]:
    """One store per authz worker process, each with its own Redis connections."""
    return [
        LeasedBudgetStore(
            RedisBudgetStore(url, timeout_seconds=2), max_units=MAX_UNITS, seconds=seconds
        )
        for _ in range(WORKERS)
    ]


def _windows(day_limit: int, month_limit: int) -> list[BudgetWindow]:
    subject = f"it-{uuid.uuid4().hex}"
    return [
        BudgetWindow(f"budget:{{{subject}}}:api_calls:day:p", day_limit, 60),
        BudgetWindow(f"budget:{{{subject}}}:api_calls:month:p", month_limit, 3600),
    ]


async def _spend(
    workers: list[LeasedBudgetStore], windows: list[BudgetWindow], per_worker: int
) -> list[BudgetConsumption]:
    requests = [w.consume(windows, 1) for w in workers for _ in range(per_worker)]
    return await asyncio.gather(*requests)


async def _counters(raw: redis_async.Redis, windows: list[BudgetWindow]) -> list[int]:
    return [int(v or 0) for v in await raw.mget([w.key for w in windows])]


async def _script_calls(raw: redis_async.Redis) -> int:
    stats = await raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)) for cmd in ("evalsha", "eval"))


async def test_a_small_budget_is_spent_exactly_by_concurrent_workers(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    workers, windows = _workers(redis_service.url), _windows(1000, 20)
    results = await _spend(workers, windows, 40)
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 20  # room // 16 < 1 all along: every lease is one unit
    assert all(r.exceeded_index == 1 for r in results if not r.allowed)
    assert await _counters(raw, windows) == [20, 20]
    for worker in workers:
        await worker.close()
    assert await _counters(raw, windows) == [20, 20]


async def test_a_large_budget_is_never_overspent_and_unused_leases_go_back_at_close(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    workers, windows = _workers(redis_service.url), _windows(1000, 100_000)
    spent = 0
    for _ in range(4):  # rounds of concurrent requests until the day is used up
        results = await _spend(workers, windows, 150)
        spent += sum(r.allowed for r in results)
        assert spent <= 1000
    assert spent >= 1000 - WORKERS * MAX_UNITS  # the documented bound on unused leased units
    assert (await _counters(raw, windows))[0] <= 1000
    for worker in workers:
        await worker.close()
    assert await _counters(raw, windows) == [spent, spent]


async def test_a_budget_with_room_is_served_from_leases(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    workers, windows = _workers(redis_service.url, seconds=0.5), _windows(100_000, 1_000_000)
    calls_before = await _script_calls(raw)
    results = await _spend(workers, windows, 200)
    calls = await _script_calls(raw) - calls_before
    assert all(r.allowed for r in results)
    # blocks of MAX_UNITS: about 4 Redis calls per worker for its 200 requests, not 200
    assert calls <= WORKERS * (200 // MAX_UNITS + 1)
    used = await _counters(raw, windows)
    assert 600 <= used[0] <= 600 + WORKERS * MAX_UNITS  # blocks still held count as used

    async def given_back() -> bool:  # the sweepers give the unused units back once leases age
        return await _counters(raw, windows) == [600, 600]

    await eventually_async(given_back, 10, what="the unused units given back")
    assert await _counters(raw, windows) == [600, 600]
    for worker in workers:
        await worker.close()
    assert await _counters(raw, windows) == [600, 600]


async def test_peek_reports_redis_less_the_worker_own_unused_units(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    worker = _workers(redis_service.url)[0]
    windows = _windows(10_000, 100_000)
    for _ in range(3):
        await worker.consume(windows, 1)
    assert await _counters(raw, windows) == [MAX_UNITS, MAX_UNITS]
    assert (await worker.peek(windows, 0)).used == (3, 3)
    await worker.close()


async def test_give_back_never_goes_below_zero_nor_recreates_a_counter(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    store = RedisBudgetStore(redis_service.url, timeout_seconds=2)
    try:
        windows = _windows(10_000, 100_000)
        first = await store.reserve(windows, 1, most=10, divisor=16, give_back=0)
        assert (first.block, first.used) == (10, (0, 0))
        assert 0 < await raw.ttl(windows[0].key) <= 60
        await raw.set(windows[0].key, 4, keepttl=True)  # an operator lowered it
        await raw.delete(windows[1].key)  # or it expired
        await store.release([([w.key for w in windows], 9)])
        assert await _counters(raw, windows) == [0, 0]
        assert not await raw.exists(windows[1].key)
        renewed = await store.reserve(windows, 1, most=10, divisor=16, give_back=0)
        refused = await store.reserve(
            [BudgetWindow(windows[0].key, 11, 60)], 5, most=10, divisor=16, give_back=3
        )
        assert (renewed.block, refused.block, refused.used) == (10, 0, (7,))  # given back anyway
    finally:
        await store.close()
