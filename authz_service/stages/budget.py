"""Stage 4: atomically check and consume the principal's budget for the route's metric."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import BudgetStore, BudgetWindow
from authz_service.principal import Principal
from gateway_contract.runtime import Budgets, BudgetSubject, Window

WINDOWS: tuple[Window, ...] = ("day", "month")
# names a subject's counter of a metric in one window period: the store's key schema
CounterKey = Callable[[BudgetSubject, str, Window, str], str]


@dataclass(frozen=True, slots=True)
class BudgetResult:
    """What was consumed; `remaining`, `used` and `limit` describe the tightest window.

    With budget leases `used` is as of this worker's last lease plus its own consumption since
    (docs/ARCHITECTURE.md, "Budget guarantee").
    """

    metric: str
    cost: int
    remaining: int | None
    used: int | None
    limit: int | None


class _Period(NamedTuple):
    starts_at: float
    resets_at: float
    period: str


# window -> its current period: the calendar is worked out once per period, not per request
_periods: dict[Window, _Period] = {}


def _period_at(window: Window, now: float) -> _Period:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return _Period(start.timestamp(), start.timestamp() + 86_400, start.strftime("%Y-%m-%d"))
    start = start.replace(day=1)
    if start.month == 12:
        reset = start.replace(year=start.year + 1, month=1)
    else:
        reset = start.replace(month=start.month + 1)
    return _Period(start.timestamp(), reset.timestamp(), start.strftime("%Y-%m"))


def window_period(window: Window, now: float) -> tuple[str, float]:
    """The period id of a window at `now` and the unix time it resets (UTC calendar)."""
    cached = _periods.get(window)
    if cached is None or not cached.starts_at <= now < cached.resets_at:
        cached = _periods[window] = _period_at(window, now)
    return cached.period, cached.resets_at


def budget_windows(
    budgets: Budgets,
    plan: str,
    subject: BudgetSubject,
    metric: str,
    now: float,
    *,
    counter_key: CounterKey,
) -> tuple[list[BudgetWindow], list[tuple[Window, float]]]:
    """The limited windows of a subject's metric: counters (named by the store's
    `counter_key`), and (window name, reset time)."""
    windows: list[BudgetWindow] = []
    names: list[tuple[Window, float]] = []
    for window in WINDOWS:
        limit = budgets.limit(plan, subject, metric, window)
        if limit is None:
            continue
        period, resets_at = window_period(window, now)
        ttl = max(1, math.ceil(resets_at - now) + 60)
        windows.append(BudgetWindow(counter_key(subject, metric, window, period), limit, ttl))
        names.append((window, resets_at))
    return windows, names


async def consume_budget(
    check: CheckContext,
    principal: Principal,
    budgets: Budgets,
    store: BudgetStore,
    clock: Callable[[], float] = time.time,
) -> BudgetResult | Denial | None:
    """None when the route consumes no budget; the result when allowed; a 402 when exceeded."""
    metric, cost = check.route.budget_metric, check.route.budget_cost
    if not metric:
        return None
    if cost < 1:
        return Denial(
            ErrorCode.ROUTE_MISCONFIGURED, Stage.BUDGET, "the route's budget_cost is invalid"
        )
    now = clock()
    subject = principal.budget_subject
    windows, names = budget_windows(
        budgets, principal.plan, subject, metric, now, counter_key=store.counter_key
    )
    if not windows:
        return BudgetResult(metric, cost, remaining=None, used=None, limit=None)
    consumption = await store.consume(windows, cost)
    if not consumption.allowed:
        index = consumption.exceeded_index or 0
        window, resets_at = names[index]
        limit, used = windows[index].limit, consumption.used[index]
        retry_after = max(1, math.ceil(resets_at - now))
        return Denial(
            ErrorCode.BUDGET_EXCEEDED,
            Stage.BUDGET,
            f"the {window} budget of {limit} {metric} is used up ({used} used, {cost} needed)",
            headers=(("retry-after", str(retry_after)),),
            extensions={
                "budget": {
                    "metric": metric,
                    "window": window,
                    "limit": limit,
                    "used": used,
                    "cost": cost,
                    "resets_at": datetime.fromtimestamp(resets_at, UTC).isoformat(),
                }
            },
        )
    tightest = min(range(len(windows)), key=lambda i: windows[i].limit - consumption.used[i])
    limit, used = windows[tightest].limit, consumption.used[tightest]
    return BudgetResult(metric, cost, remaining=max(0, limit - used), used=used, limit=limit)
