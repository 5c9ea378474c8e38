"""BudgetStore spending blocks of units leased from Redis: no Redis round trip per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authz_service.errors import DependencyUnavailableError
from authz_service.ports import (
    BudgetConsumption,
    BudgetStore,
    BudgetWindow,
    LeasableBudgetStore,
    consumption_if,
)
from gateway_contract.runtime import BudgetSubject, Window

log = logging.getLogger(__name__)

# A lease takes at most this fraction of the room left, so that near the limit leases shrink to
# the request's cost and every request is decided by Redis again, exactly as without leases.
ROOM_DIVISOR = 16

# (counter key, limit) per window: a reload that changes a limit starts a new lease
LeaseId = tuple[tuple[str, int], ...]


@dataclass(slots=True, eq=False)
class _Lease:
    """One key set's block: `left` of its units not handed out yet, reserved on top of `base`."""

    keys: tuple[str, ...]
    base: tuple[int, ...] = ()  # per window: Redis's counter before the block was reserved
    taken: int = 0
    left: int = 0
    granted_at: float = -math.inf
    refill: asyncio.Task[BudgetConsumption] | None = None
    refill_cost: int = 0

    def take(self, cost: int) -> BudgetConsumption:
        self.left -= cost
        self.taken += cost
        return BudgetConsumption(allowed=True, used=tuple(b + self.taken for b in self.base))


class LeasedBudgetStore:
    """Reserves blocks in Redis, which counts them as used (never an overspend); spends locally.

    One refill in flight per key set (the others wait for it); unused units go back to Redis
    when the lease is renewed, when it is older than `seconds` (a sweeper, also at the window's
    rollover since its counters change name) and on close().
    """

    def __init__(
        self,
        ledger: LeasableBudgetStore,
        *,
        max_units: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._max_units = max_units
        self._seconds = seconds
        self._clock = clock
        self._leases: dict[LeaseId, _Lease] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def counter_key(self, subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        return self._ledger.counter_key(subject, metric, window, period)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        if not windows:
            return BudgetConsumption(allowed=True, used=())
        ident = tuple((w.key, w.limit) for w in windows)
        while True:
            lease = self._leases.get(ident)
            if lease is None:
                lease = self._leases[ident] = _Lease(tuple(w.key for w in windows))
                self._start_sweeper()
            if lease.left >= cost and self._clock() < lease.granted_at + self._seconds:
                return lease.take(cost)
            if lease.refill is None:
                break
            refill_cost = lease.refill_cost
            # shielded: a cancelled check must not cancel a refill other checks are waiting for
            outcome = await asyncio.shield(lease.refill)
            if not outcome.allowed and cost >= refill_cost:
                return outcome  # Redis refused as much while this request waited: same answer
        lease.refill_cost = cost
        lease.refill = asyncio.create_task(self._refill(lease, windows, cost))
        return await asyncio.shield(lease.refill)

    async def _refill(
        self, lease: _Lease, windows: Sequence[BudgetWindow], cost: int
    ) -> BudgetConsumption:
        """Give back the rest of the block and reserve a new one in one call; `cost` from it."""
        # zeroed before the call: a give-back reaches Redis at most once, whatever the reply
        give_back, lease.left = lease.left, 0
        try:
            reservation = await self._ledger.reserve(
                windows, cost, most=self._max_units, divisor=ROOM_DIVISOR, give_back=give_back
            )
        finally:
            lease.refill = None
        if reservation.block == 0:
            return BudgetConsumption(False, reservation.used, reservation.exceeded_index)
        lease.base, lease.taken = reservation.used, 0
        lease.left, lease.granted_at = reservation.block, self._clock()
        return lease.take(cost)

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        """Redis's counters less this process's unused leased units (exact with one worker)."""
        usage = await self._ledger.peek(windows, 0)
        unused: dict[str, int] = {}
        for lease in self._leases.values():
            if lease.left:
                for key in lease.keys:
                    unused[key] = unused.get(key, 0) + lease.left
        used = [max(0, u - unused.get(w.key, 0)) for w, u in zip(windows, usage.used, strict=True)]
        return consumption_if(windows, used, cost)

    async def sweep(self, *, everything: bool = False) -> None:
        """Give back the unused units of leases older than `seconds` (all of them: `everything`)."""
        expired_before = self._clock() - self._seconds
        blocks: list[tuple[Sequence[str], int]] = []
        for ident, lease in list(self._leases.items()):
            if lease.refill is None and (everything or lease.granted_at <= expired_before):
                # detached before the await: no request can take from, or renew, this block again
                del self._leases[ident]
                if lease.left:
                    blocks.append((lease.keys, lease.left))
                    lease.left = 0
        if blocks:
            await self._ledger.release(blocks)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._seconds / 2)
            try:
                await self.sweep()
            except DependencyUnavailableError as exc:
                # those units stay counted until their window resets: an under-spend, never over
                log.warning("budget lease give-back failed", extra={"error": str(exc)})

    def _start_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def healthy(self) -> bool:
        return await self._ledger.healthy()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        refills = [lease.refill for lease in self._leases.values() if lease.refill is not None]
        await asyncio.gather(*refills, return_exceptions=True)
        try:
            await self.sweep(everything=True)
        except DependencyUnavailableError as exc:
            log.warning("budget lease give-back at close failed", extra={"error": str(exc)})
        await self._ledger.close()


def leased(ledger: LeasableBudgetStore, *, max_units: int, seconds: float) -> BudgetStore:
    """The ledger behind leases of up to `max_units` units, or the ledger itself when 0."""
    if max_units <= 0:
        return ledger
    return LeasedBudgetStore(ledger, max_units=max_units, seconds=seconds)
