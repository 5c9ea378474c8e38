"""BudgetStore in process memory: one development instance only (not shared, not durable)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from authz_service.adapters.redis_budget import counter_key as redis_counter_key
from authz_service.ports import BudgetConsumption, BudgetWindow, consumption_if
from gateway_contract.runtime import BudgetSubject, Window


class InProcessLedger:
    """Same semantics as the Redis script; atomic because it never awaits between read and write."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (used, expires at)

    def _used(self, key: str, now: float) -> int:
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            self._counters.pop(key, None)
            return 0
        return entry[0]

    @staticmethod
    def counter_key(subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        """Redis's key schema: the ledger stands in for Redis, counter for counter."""
        return redis_counter_key(subject, metric, window, period)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        now = self._clock()
        used = [self._used(window.key, now) for window in windows]
        for index, window in enumerate(windows):
            if used[index] + cost > window.limit:
                return BudgetConsumption(allowed=False, used=tuple(used), exceeded_index=index)
        for index, window in enumerate(windows):
            expires_at = self._counters.get(window.key, (0, now + window.ttl_seconds))[1]
            used[index] += cost
            self._counters[window.key] = (used[index], expires_at)
        return BudgetConsumption(allowed=True, used=tuple(used))

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        now = self._clock()
        used = tuple(self._used(window.key, now) for window in windows)
        return consumption_if(windows, used, cost)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None
