"""The audit writer's bounded in-memory queue, woken once per batch rather than once per entry."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """A deque with a bound; `next_batch` waits for the first entry, then for a full batch.

    An asyncio.Queue read with one wait_for per entry cost a task and a timer per audit entry;
    this wakes the writer only for the first entry, a full batch or `wake()`.
    """

    def __init__(self, bound: int, batch_size: int) -> None:
        self._items: deque[T] = deque()
        self._bound = bound
        self._batch_size = batch_size
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """False when the queue is at its bound (the caller spools the entry instead)."""
        items = self._items
        if len(items) >= self._bound:
            return False
        items.append(item)
        if len(items) == 1 or len(items) >= self._batch_size:
            self._arrived.set()
        return True

    def wake(self) -> None:
        """Stop waiting for a fuller batch (shutdown)."""
        self._arrived.set()

    async def next_batch(self, first_wait: float, fill_wait: float) -> list[T]:
        """Up to batch_size entries: waits up to first_wait for one, then fill_wait for more."""
        if not self._items and not await self._wait(first_wait):
            return []
        if len(self._items) < self._batch_size:
            await self._wait(fill_wait)
        return self.take(self._batch_size)

    async def _wait(self, seconds: float) -> bool:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._arrived.wait()
        return bool(self._items)

    def take(self, count: int | None = None) -> list[T]:
        """The oldest `count` entries (all when None), removed from the queue."""
        items = self._items
        n = len(items) if count is None else min(count, len(items))
        return [items.popleft() for _ in range(n)]
