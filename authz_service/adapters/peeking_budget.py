"""A BudgetStore that never spends: Explain's view of the service's budget store."""

from __future__ import annotations

from collections.abc import Sequence

from authz_service.ports import BudgetConsumption, BudgetStore, BudgetWindow
from gateway_contract.runtime import BudgetSubject, Window


class PeekingBudgetStore:
    """A BudgetStore whose `consume` only peeks: Explain reports the budget, never spends it."""

    def __init__(self, store: BudgetStore) -> None:
        self._store = store

    def counter_key(self, subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        return self._store.counter_key(subject, metric, window, period)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        return await self._store.peek(windows, cost)

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        return await self._store.peek(windows, cost)

    async def healthy(self) -> bool:
        return await self._store.healthy()

    async def close(self) -> None:
        return None  # the wrapped store belongs to the service
