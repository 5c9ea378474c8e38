"""Budget fixtures of the Redis integration tests: a trial plan, overrides, subjects, spending."""

from __future__ import annotations

from datetime import UTC, datetime

from authz_service.errors import Denial
from authz_service.ports import BudgetStore
from authz_service.principal import Principal
from authz_service.stages.budget import BudgetResult, consume_budget
from gateway_contract.runtime import Budgets
from tests.unit.authz.authz_helpers import check_context

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp()
TRIAL_DAY = 5
ACME_DAY = 9


def trial_budgets(customer: str, user: str) -> Budgets:
    return Budgets.model_validate(
        {
            "plans": {"trial": {"api_calls": {"day": TRIAL_DAY, "month": 100}}},
            "overrides": {
                "customers": {customer: {"api_calls": {"day": ACME_DAY}}},
                "users": {user: {"api_calls": {"day": ACME_DAY + 1}}},
            },
        }
    )


def customer_principal(customer: str) -> Principal:
    return Principal("someone", customer, ("customer",), True, None, "trial", None, "i", NOW + 60)


def user_principal(sub: str) -> Principal:
    return Principal(sub, None, ("customer",), True, None, "trial", None, "i", NOW + 60)


async def spend(
    store: BudgetStore, principal: Principal, budgets: Budgets, times: int
) -> list[BudgetResult | Denial | None]:
    return [
        await consume_budget(check_context(), principal, budgets, store, lambda: NOW)
        for _ in range(times)
    ]


def allowed_count(results: list[BudgetResult | Denial | None]) -> int:
    return sum(isinstance(result, BudgetResult) for result in results)
