"""Redis as the budgets' one truth: a lost ledger or a skewed clock fails closed, never re-spends.

Faults pass of 2026-11-30: an exhausted trial customer got 30 more 200s after `FLUSHALL`
(`make up`, PLANT /api/v1/orders: 100 allowed, 30 refused; FLUSHALL; 30 of 30 allowed). Any
loss of the counters (FLUSHALL, FLUSHDB, a restart without persistence, an empty Redis put in
its place, keys evicted) looks like a fresh day to the scripts; the ledger's identity key tells
them apart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_async

from authz_service.adapters.budget_lease import LeasedBudgetStore
from authz_service.adapters.peeking_budget import PeekingBudgetStore
from authz_service.adapters.redis_budget import (
    CLOCK_SKEW,
    LEDGER_KEY,
    LEDGER_LOST,
    RedisBudgetStore,
)
from authz_service.errors import DependencyUnavailableError
from authz_service.ports import BudgetStore
from authz_service.stages.budget import consume_budget
from devstack import RedisService, provision_redis
from tests.integration._budgets import (
    ACME_DAY,
    NOW,
    allowed_count,
    customer_principal,
    spend,
    trial_budgets,
)
from tests.unit.authz.authz_helpers import check_context

STORES: dict[str, Callable[[str], BudgetStore]] = {
    "per-request": lambda url: RedisBudgetStore(url, timeout_seconds=2),
    "leased": lambda url: LeasedBudgetStore(
        RedisBudgetStore(url, timeout_seconds=2), max_units=100, seconds=30
    ),
}


async def _flushall(raw: redis_async.Redis) -> None:
    await raw.flushall()


async def _flushdb(raw: redis_async.Redis) -> None:
    await raw.flushdb()


async def _ledger_evicted(raw: redis_async.Redis) -> None:
    await raw.delete(LEDGER_KEY)


async def _other_ledger(raw: redis_async.Redis) -> None:
    # an emptied Redis that another service instance adopted first
    await raw.flushdb()
    await raw.set(LEDGER_KEY, uuid.uuid4().hex)


FAULTS: dict[str, Callable[[redis_async.Redis], Awaitable[None]]] = {
    "FLUSHALL": _flushall,
    "FLUSHDB": _flushdb,
    "ledger key evicted": _ledger_evicted,
    "empty Redis adopted by another instance": _other_ledger,
}


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    """A Redis of this module's own: flushing the session's would empty every stack's budgets."""
    workdir: Path = tmp_path_factory.mktemp("ledger-redis")
    with provision_redis(workdir) as service:
        yield service


@pytest.fixture
async def raw(private_redis: RedisService) -> AsyncIterator[redis_async.Redis]:
    client = redis_async.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


@pytest.fixture(params=sorted(STORES))
async def store(
    request: pytest.FixtureRequest, private_redis: RedisService
) -> AsyncIterator[BudgetStore]:
    budget_store = STORES[request.param](private_redis.url)
    yield budget_store
    await budget_store.close()


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_an_exhausted_customer_is_refused_not_refilled_when_redis_loses_the_ledger(
    store: BudgetStore, raw: redis_async.Redis, fault: str
) -> None:
    acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
    budgets = trial_budgets(acme, "nobody")
    spent = await spend(store, customer_principal(acme), budgets, ACME_DAY + 1)
    assert allowed_count(spent) == ACME_DAY
    await FAULTS[fault](raw)
    with pytest.raises(DependencyUnavailableError) as lost:
        await spend(store, customer_principal(acme), budgets, 1)
    assert (lost.value.dependency, lost.value.reason) == ("redis", LEDGER_LOST)
    assert not await store.healthy()  # authz.redis reports NOT_SERVING


async def test_explain_and_the_budget_rpc_refuse_a_lost_ledger_too(
    private_redis: RedisService, raw: redis_async.Redis
) -> None:
    ledger = RedisBudgetStore(private_redis.url, timeout_seconds=2)
    try:
        acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
        budgets = trial_budgets(acme, "nobody")
        await spend(ledger, customer_principal(acme), budgets, ACME_DAY)
        await raw.flushdb()
        with pytest.raises(DependencyUnavailableError):
            await consume_budget(
                check_context(), customer_principal(acme), budgets, PeekingBudgetStore(ledger),
                lambda: NOW,
            )  # fmt: skip
    finally:
        await ledger.close()


async def test_a_restarted_service_starts_a_new_ledger_on_an_empty_redis(
    private_redis: RedisService, raw: redis_async.Redis
) -> None:
    """The restart is the operator's acknowledgement: the documented way back."""
    await raw.flushdb()
    first = RedisBudgetStore(private_redis.url, timeout_seconds=2)
    second = RedisBudgetStore(private_redis.url, timeout_seconds=2)  # another worker
    try:
        acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
        budgets = trial_budgets(acme, "nobody")
        half = ACME_DAY // 2
        assert allowed_count(await spend(first, customer_principal(acme), budgets, half)) == half
        rest = await spend(second, customer_principal(acme), budgets, ACME_DAY)
        assert allowed_count(rest) == ACME_DAY - half  # one ledger, shared
        assert await first.healthy()
        assert await second.healthy()
    finally:
        await first.close()
        await second.close()


SKEWS = {"a day ahead": 86_400.0, "a day behind": -86_400.0, "a minute ahead": 60.0}


@pytest.mark.parametrize("skew", sorted(SKEWS))
async def test_a_host_whose_clock_is_off_is_refused_not_given_another_period(
    private_redis: RedisService, skew: str
) -> None:
    """A window's period comes from the host's clock: a host a day ahead spent tomorrow's
    counters (a whole day's budget again for every subject). The scripts compare it with
    Redis's clock, which every instance shares."""
    offset = SKEWS[skew]

    def skewed() -> float:
        return time.time() + offset

    acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
    budgets = trial_budgets(acme, "nobody")
    honest = RedisBudgetStore(private_redis.url, timeout_seconds=2)
    off = RedisBudgetStore(private_redis.url, timeout_seconds=2, clock=skewed)
    try:
        spent = await spend(honest, customer_principal(acme), budgets, ACME_DAY + 1)
        assert allowed_count(spent) == ACME_DAY
        with pytest.raises(DependencyUnavailableError) as refused:
            await consume_budget(check_context(), customer_principal(acme), budgets, off, skewed)
        assert (refused.value.dependency, refused.value.reason) == ("redis", CLOCK_SKEW)
        assert not await off.healthy()
        assert await honest.healthy()
    finally:
        await honest.close()
        await off.close()


async def test_the_skew_check_can_be_turned_off(private_redis: RedisService) -> None:
    acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
    unchecked = RedisBudgetStore(
        private_redis.url, timeout_seconds=2, max_clock_skew_seconds=0,
        clock=lambda: time.time() + 3600,
    )  # fmt: skip
    try:
        spent = await spend(unchecked, customer_principal(acme), trial_budgets(acme, "n"), 1)
        assert allowed_count(spent) == 1
    finally:
        await unchecked.close()
