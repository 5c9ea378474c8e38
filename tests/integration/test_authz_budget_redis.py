"""RedisBudgetStore against the real Redis: atomic check-and-consume, expiry, failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_async

from authz_service.adapters.redis_budget import RedisBudgetStore
from authz_service.errors import DependencyUnavailableError
from authz_service.ports import BudgetWindow
from devstack import RedisService
from tests.support.free_ports import free_port


@pytest.fixture
async def store(redis_service: RedisService) -> AsyncIterator[RedisBudgetStore]:
    budget_store = RedisBudgetStore(redis_service.url, timeout_seconds=2)
    yield budget_store
    await budget_store.close()


@pytest.fixture
async def raw(redis_service: RedisService) -> AsyncIterator[redis_async.Redis]:
    client = redis_async.Redis.from_url(redis_service.url)
    yield client
    await client.aclose()


def _key(window: str) -> str:
    return f"budget:{{it-{uuid.uuid4().hex}}}:api_calls:{window}:p"


async def test_concurrent_consumers_never_exceed_the_limit(store: RedisBudgetStore) -> None:
    windows = [BudgetWindow(_key("day"), 20, 60)]
    results = await asyncio.gather(*(store.consume(windows, 1) for _ in range(60)))
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 20
    assert sorted(r.used[0] for r in allowed) == list(range(1, 21))
    assert all(r.exceeded_index == 0 and r.used == (20,) for r in results if not r.allowed)


async def test_all_windows_or_none(store: RedisBudgetStore, raw: redis_async.Redis) -> None:
    day, month = _key("day"), _key("month")
    windows = [BudgetWindow(day, 100, 60), BudgetWindow(month, 3, 3600)]
    assert (await store.consume(windows, 2)).used == (2, 2)
    refused = await store.consume(windows, 2)
    assert (refused.allowed, refused.exceeded_index, refused.used) == (False, 1, (2, 2))
    assert int(await raw.get(day) or 0) == 2  # the day window was not charged by the refusal
    assert 0 < await raw.ttl(day) <= 60
    assert 3590 < await raw.ttl(month) <= 3600


async def test_script_is_reloaded_after_a_flush(
    store: RedisBudgetStore, raw: redis_async.Redis
) -> None:
    windows = [BudgetWindow(_key("day"), 5, 60)]
    await store.consume(windows, 1)
    await raw.script_flush()
    assert (await store.consume(windows, 1)).used == (2,)


async def test_unreachable_redis_is_a_dependency_failure() -> None:
    port = free_port()  # nothing listens on it
    dead = RedisBudgetStore(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.5)
    try:
        with pytest.raises(DependencyUnavailableError) as info:
            await dead.consume([BudgetWindow(_key("day"), 5, 60)], 1)
        assert info.value.dependency == "redis"
        assert not await dead.healthy()
    finally:
        await dead.close()
