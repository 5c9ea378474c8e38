"""A small bounded LRU cache whose entries expire at a given monotonic or wall-clock time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from authz_service import metrics

V = TypeVar("V")


class ExpiringLRU(Generic[V]):
    """Entries live until their own deadline (on `clock`) and the oldest go when full."""

    def __init__(self, name: str, max_size: int, clock: Callable[[], float]) -> None:
        self._max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._hits = metrics.CACHE_LOOKUPS.labels(name, "hit")
        self._misses = metrics.CACHE_LOOKUPS.labels(name, "miss")

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                self._hits.inc()
                return entry[1]
            del self._entries[key]
        self._misses.inc()
        return None

    def put(self, key: Hashable, value: V, expires_at: float) -> None:
        if self._max_size <= 0 or expires_at <= self._clock():
            return
        self._entries[key] = (expires_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
