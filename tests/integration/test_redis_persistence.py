"""Budgets survive a Redis restart: Redis runs with an append-only file, fsynced every second.

Issue 13, finding 8: an exhausted customer got 200 again after Redis restarted.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_async

from authz_service.adapters.redis_budget import RedisBudgetStore
from authz_service.errors import Denial
from authz_service.stages.budget import consume_budget
from devstack import RedisService
from tests.integration._budgets import (
    ACME_DAY,
    NOW,
    allowed_count,
    customer_principal,
    spend,
    trial_budgets,
)
from tests.support.waiting import eventually_async
from tests.unit.authz.authz_helpers import check_context


@pytest.fixture
async def raw(redis_service: RedisService) -> AsyncIterator[redis_async.Redis]:
    client = redis_async.Redis.from_url(redis_service.url)
    yield client
    await client.aclose()


async def test_redis_runs_with_an_append_only_file_fsynced_every_second(
    raw: redis_async.Redis,
) -> None:
    config = await raw.config_get("appendonly")
    fsync = await raw.config_get("appendfsync")
    assert (config["appendonly"], fsync["appendfsync"]) == ("yes", "everysec")


async def test_an_exhausted_customer_stays_exhausted_after_a_redis_restart(
    redis_service: RedisService,
) -> None:
    acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
    budgets = trial_budgets(acme, "nobody")
    before = RedisBudgetStore(redis_service.url, timeout_seconds=2)
    try:
        assert (
            allowed_count(await spend(before, customer_principal(acme), budgets, ACME_DAY + 1))
            == ACME_DAY
        )
    finally:
        await before.close()
    redis_service.restart()  # SIGTERM (the container's stop): Redis fsyncs the AOF on the way out
    after = RedisBudgetStore(redis_service.url, timeout_seconds=2)
    try:
        refused = await consume_budget(
            check_context(), customer_principal(acme), budgets, after, lambda: NOW
        )
    finally:
        await after.close()
    assert isinstance(refused, Denial), refused
    assert refused.extensions["budget"]["used"] == ACME_DAY


async def _rewrite_done(raw: redis_async.Redis) -> bool:
    info = await raw.info("persistence")
    idle = info["aof_rewrite_in_progress"] == 0 and info["aof_rewrite_scheduled"] == 0
    return bool(idle and info["aof_last_bgrewrite_status"] == "ok")


async def test_a_killed_redis_keeps_what_reached_the_append_only_file(
    redis_service: RedisService, raw: redis_async.Redis
) -> None:
    key = f"budget:{{customer:crash-{uuid.uuid4().hex}}}:api_calls:day:p"
    await raw.incrby(key, 42)
    # a rewrite writes and fsyncs the whole data set: after it the counter is on disk,
    # whatever the once-a-second fsync policy has done so far
    await raw.bgrewriteaof()
    await eventually_async(lambda: _rewrite_done(raw), 60, what="the AOF rewrite")
    pid = redis_service.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash: no shutdown, no final fsync
    redis_service.stop()
    redis_service.start()
    client = redis_async.Redis.from_url(redis_service.url)
    try:
        assert int(await client.get(key) or 0) == 42
    finally:
        await client.aclose()
