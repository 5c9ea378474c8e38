"""Stage 4 with the in-process ledger: limits by plan and override, 402 with Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from authz_service.adapters.memory_budget import InProcessLedger
from authz_service.adapters.redis_budget import counter_key
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import BudgetWindow
from authz_service.principal import Principal
from authz_service.stages.budget import (
    BudgetResult,
    budget_windows,
    consume_budget,
    window_period,
)
from gateway_contract.runtime import BudgetSubject, RuntimeConfig
from tests.unit.authz.authz_helpers import check_context

NOW = datetime(2025, 12, 31, 23, 0, tzinfo=UTC).timestamp()


def _principal(plan: str, customer: str | None = "c1", user: str = "u1") -> Principal:
    return Principal(
        user, customer, ("customer",), plan == "trial", None, plan, None, "i", NOW + 60
    )


def test_windows_reset_at_utc_calendar_boundaries() -> None:
    assert window_period("day", NOW) == ("2025-12-31", datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    assert window_period("month", NOW) == ("2025-12", datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    mid = datetime(2025, 3, 15, 12, tzinfo=UTC).timestamp()
    assert window_period("month", mid) == ("2025-03", datetime(2025, 4, 1, tzinfo=UTC).timestamp())


def test_cached_periods_turn_over_exactly_at_midnight_and_month_end() -> None:
    def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> float:
        return datetime(year, month, day, hour, minute, sec, tzinfo=UTC).timestamp()

    midnight = at(2026, 1, 1)
    # forwards across the year's last second, then backwards (a stepped clock)
    for now, day, month in [
        (at(2025, 12, 30, 12), "2025-12-30", "2025-12"),
        (midnight - 0.000_001, "2025-12-31", "2025-12"),
        (midnight, "2026-01-01", "2026-01"),
        (midnight + 86_400 - 0.5, "2026-01-01", "2026-01"),
        (midnight + 86_400, "2026-01-02", "2026-01"),
        (at(2026, 1, 31, 23, 59, 59), "2026-01-31", "2026-01"),
        (at(2026, 2, 1), "2026-02-01", "2026-02"),
        (at(2024, 2, 29, 23), "2024-02-29", "2024-02"),
        (midnight - 1, "2025-12-31", "2025-12"),
    ]:
        assert window_period("day", now)[0] == day, now
        assert window_period("month", now)[0] == month, now
    assert window_period("day", midnight - 1)[1] == midnight
    assert window_period("month", at(2024, 2, 29, 23))[1] == at(2024, 3, 1)


async def test_trial_day_limit_then_402(runtime_config: RuntimeConfig) -> None:
    ledger = InProcessLedger()
    principal = _principal("trial")
    remaining = []
    for _ in range(3):
        result = await consume_budget(
            check_context(), principal, runtime_config.budgets, ledger, lambda: NOW
        )
        assert isinstance(result, BudgetResult)
        remaining.append(result.remaining)
    assert remaining == [2, 1, 0]
    denial = await consume_budget(
        check_context(), principal, runtime_config.budgets, ledger, lambda: NOW
    )
    assert isinstance(denial, Denial)
    assert (denial.code, denial.stage, denial.status) == (
        ErrorCode.BUDGET_EXCEEDED,
        Stage.BUDGET,
        402,
    )
    assert dict(denial.headers)["retry-after"] == "3600"
    budget = denial.extensions["budget"]
    assert (budget["metric"], budget["window"], budget["limit"], budget["used"]) == (
        "api_calls",
        "day",
        3,
        3,
    )


async def test_refused_request_consumes_nothing(runtime_config: RuntimeConfig) -> None:
    ledger = InProcessLedger()
    principal = _principal("trial")
    big = check_context(budget_cost="3")
    assert isinstance(
        await consume_budget(big, principal, runtime_config.budgets, ledger, lambda: NOW),
        BudgetResult,
    )
    assert isinstance(
        await consume_budget(big, principal, runtime_config.budgets, ledger, lambda: NOW), Denial
    )
    # the month window (10) was not charged by the refused attempt: 3 used, not 6
    key = counter_key(BudgetSubject("customer", "c1"), "api_calls", "month", "2025-12")
    assert (await ledger.consume([BudgetWindow(key, 10, 60)], 0)).used == (3,)


async def test_customers_share_and_users_without_one_are_separate(
    runtime_config: RuntimeConfig,
) -> None:
    ledger = InProcessLedger()
    budgets = runtime_config.budgets
    for user in ("a", "b", "c"):
        await consume_budget(
            check_context(), _principal("trial", "shared", user), budgets, ledger, lambda: NOW
        )
    shared = await consume_budget(
        check_context(), _principal("trial", "shared", "d"), budgets, ledger, lambda: NOW
    )
    alone = await consume_budget(
        check_context(), _principal("trial", None, "d"), budgets, ledger, lambda: NOW
    )
    assert isinstance(shared, Denial)
    assert isinstance(alone, BudgetResult)


async def test_override_replaces_the_plan_limit(runtime_config: RuntimeConfig) -> None:
    result = await consume_budget(
        check_context(),
        _principal("standard", "cust-big"),
        runtime_config.budgets,
        InProcessLedger(),
        lambda: NOW,
    )
    assert isinstance(result, BudgetResult)
    # day override 5000 - 1; month still the plan's 1000 - 1, the tighter one is reported
    assert (result.limit, result.remaining) == (1000, 999)


async def test_unlimited_plan_and_unmetered_routes_pass(runtime_config: RuntimeConfig) -> None:
    unlimited = await consume_budget(
        check_context(),
        _principal("enterprise"),
        runtime_config.budgets,
        InProcessLedger(),
        lambda: NOW,
    )
    assert isinstance(unlimited, BudgetResult)
    assert unlimited.remaining is None
    skipped = await consume_budget(
        check_context(budget_metric=""),
        _principal("trial"),
        runtime_config.budgets,
        InProcessLedger(),
    )
    assert skipped is None


@pytest.mark.parametrize("cost", ["0", "-1", "abc"])
async def test_bad_cost_fails_closed(runtime_config: RuntimeConfig, cost: str) -> None:
    denial = await consume_budget(
        check_context(budget_cost=cost),
        _principal("trial"),
        runtime_config.budgets,
        InProcessLedger(),
    )
    assert isinstance(denial, Denial)
    assert denial.code is ErrorCode.ROUTE_MISCONFIGURED


async def test_ledger_counters_expire_with_their_window() -> None:
    now = [0.0]
    ledger = InProcessLedger(clock=lambda: now[0])
    window = [BudgetWindow("k", 1, 10)]
    assert (await ledger.consume(window, 1)).allowed
    assert not (await ledger.consume(window, 1)).allowed
    now[0] = 11
    assert (await ledger.consume(window, 1)).allowed


# --- subjects of different kinds never share a counter or an override (issue 13, finding 7) --


@pytest.mark.parametrize(
    ("spender", "bystander"),
    [
        (("trial", "cust-1", "u1"), ("trial", None, "cust-1")),  # user sub == customer id
        (("trial", None, "cust-1"), ("trial", "cust-1", "u2")),  # and the other way round
        (("trial", None, "a}b"), ("trial", None, "a")),  # a brace cannot end the hash tag
        (("trial", None, "a%7Db"), ("trial", None, "a}b")),  # nor an escape collide with one
        (("trial", None, "x}:api_calls:day:2025-12-31"), ("trial", None, "x")),
    ],
    ids=["customer-then-user", "user-then-customer", "brace", "escape", "forged-suffix"],
)
async def test_a_subject_exhausting_its_budget_leaves_every_other_subject_untouched(
    runtime_config: RuntimeConfig,
    spender: tuple[str, str | None, str],
    bystander: tuple[str, str | None, str],
) -> None:
    ledger = InProcessLedger()
    budgets = runtime_config.budgets
    for _ in range(3):  # the trial day limit
        assert isinstance(
            await consume_budget(
                check_context(), _principal(*spender), budgets, ledger, lambda: NOW
            ),
            BudgetResult,
        )
    exhausted = await consume_budget(
        check_context(), _principal(*spender), budgets, ledger, lambda: NOW
    )
    assert isinstance(exhausted, Denial)
    other = await consume_budget(
        check_context(), _principal(*bystander), budgets, ledger, lambda: NOW
    )
    assert isinstance(other, BudgetResult), other
    assert other.used == 1


@pytest.mark.parametrize(
    ("customer", "user", "day_limit"),
    [
        ("cust-big", "u1", 5000),  # the customer's override
        (None, "cust-big", 100),  # a user named like that customer: the plan's limit
        (None, "user-big", 7000),  # the user's own override
        ("user-big", "u1", 100),  # a customer named like that user: the plan's limit
    ],
)
def test_overrides_apply_to_their_subject_kind_only(
    runtime_config: RuntimeConfig, customer: str | None, user: str, day_limit: int
) -> None:
    subject = _principal("standard", customer, user).budget_subject
    windows, names = budget_windows(
        runtime_config.budgets, "standard", subject, "api_calls", NOW, counter_key=counter_key
    )
    assert dict(zip([n for n, _ in names], [w.limit for w in windows], strict=True))["day"] == (
        day_limit
    )


def test_counter_keys_of_distinct_subjects_are_distinct() -> None:
    ids = ["c", "c}", "c%7D", "c%", "c%25", "{c", "c:x", "", "customer:c"]
    subjects = [BudgetSubject(kind, i) for kind in ("customer", "user") for i in ids]
    keys = {counter_key(s, "api_calls", "day", "2025-12-31") for s in subjects}
    assert len(keys) == len(subjects)
    for key in keys:  # the hash tag is the whole subject: one slot per subject
        assert (key.count("{"), key.count("}")) == (1, 1)
