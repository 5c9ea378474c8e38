"""Budgets on the real Redis: subjects of different kinds never share a counter or an override.

Issue 13, finding 7: a user whose `sub` equals a customer id spent that customer's budget and
got its override (a trial user with sub cust-acme had a limit of 999 instead of 100).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from authz_service.adapters.budget_lease import LeasedBudgetStore
from authz_service.adapters.redis_budget import RedisBudgetStore
from authz_service.ports import BudgetStore
from devstack import RedisService
from tests.integration._budgets import (
    ACME_DAY,
    TRIAL_DAY,
    allowed_count,
    customer_principal,
    spend,
    trial_budgets,
    user_principal,
)

StoreFactory = Callable[[str], BudgetStore]
STORES: dict[str, StoreFactory] = {
    "per-request": lambda url: RedisBudgetStore(url, timeout_seconds=2),
    "leased": lambda url: LeasedBudgetStore(
        RedisBudgetStore(url, timeout_seconds=2), max_units=100, seconds=30
    ),
}


@pytest.fixture(params=sorted(STORES))
async def store(
    request: pytest.FixtureRequest, redis_service: RedisService
) -> AsyncIterator[BudgetStore]:
    budget_store = STORES[request.param](redis_service.url)
    yield budget_store
    await budget_store.close()


async def test_a_user_named_like_a_customer_neither_spends_nor_gets_its_budget(
    store: BudgetStore,
) -> None:
    acme = f"cust-acme-{uuid.uuid4().hex[:8]}"
    budgets = trial_budgets(acme, f"someone-else-{uuid.uuid4().hex[:8]}")
    impostor = await spend(store, user_principal(acme), budgets, ACME_DAY + 2)
    assert allowed_count(impostor) == TRIAL_DAY  # the plan's limit, not the customer's override
    customer = await spend(store, customer_principal(acme), budgets, ACME_DAY + 2)
    assert allowed_count(customer) == ACME_DAY  # untouched by the user's spending


async def test_a_customer_named_like_a_user_neither_spends_nor_gets_its_budget(
    store: BudgetStore,
) -> None:
    name = f"alice-{uuid.uuid4().hex[:8]}"
    budgets = trial_budgets(f"cust-{uuid.uuid4().hex[:8]}", name)
    assert (
        allowed_count(await spend(store, customer_principal(name), budgets, ACME_DAY + 3))
        == TRIAL_DAY
    )
    assert (
        allowed_count(await spend(store, user_principal(name), budgets, ACME_DAY + 3))
        == ACME_DAY + 1
    )
