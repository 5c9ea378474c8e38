"""LeasedBudgetStore on a fake ledger: single flight, shrinking leases, give-back, rollover."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from authz_service.adapters.budget_lease import ROOM_DIVISOR, LeasedBudgetStore, leased
from authz_service.adapters.redis_budget import counter_key
from authz_service.errors import DependencyUnavailableError
from authz_service.ports import (
    BudgetConsumption,
    BudgetReservation,
    BudgetWindow,
    consumption_if,
)
from tests.support.waiting import eventually_async


class FakeLedger:
    """The Redis scripts' semantics in memory; `gate` holds every reserve until it is set."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.reserves: list[tuple[int, int]] = []  # (cost, give_back) per call
        self.blocks: list[int] = []
        self.released: list[tuple[tuple[str, ...], int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False
        self.closed = False

    def _give_back(self, keys: Sequence[str], units: int) -> None:
        for key in keys:
            if self.counters.get(key, 0) > 0:
                self.counters[key] -= min(units, self.counters[key])

    async def reserve(
        self, windows: Sequence[BudgetWindow], cost: int, *, most: int, divisor: int, give_back: int
    ) -> BudgetReservation:
        self.reserves.append((cost, give_back))
        await self.gate.wait()
        if self.failing:
            raise DependencyUnavailableError("redis", "TimeoutError")
        self._give_back([w.key for w in windows], give_back)
        used = tuple(self.counters.get(w.key, 0) for w in windows)
        for index, window in enumerate(windows):
            if used[index] + cost > window.limit:
                return BudgetReservation(0, used, index)
        room = min(w.limit - u for w, u in zip(windows, used, strict=True))
        block = min(room, max(cost, min(most, room // divisor)))
        for window in windows:
            self.counters[window.key] = self.counters.get(window.key, 0) + block
        self.blocks.append(block)
        return BudgetReservation(block, used)

    async def release(self, blocks: Sequence[tuple[Sequence[str], int]]) -> None:
        for keys, units in blocks:
            self.released.append((tuple(keys), units))
            self._give_back(keys, units)

    counter_key = staticmethod(counter_key)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        raise AssertionError("a leased store never consumes one request at a time")

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        return consumption_if(windows, [self.counters.get(w.key, 0) for w in windows], cost)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


DAY = BudgetWindow("budget:{c1}:api_calls:day:2025-12-31", 10_000, 3660)
MONTH = BudgetWindow("budget:{c1}:api_calls:month:2025-12", 100_000, 3660)


def _store(ledger: FakeLedger, clock: Clock, max_units: int = 100) -> LeasedBudgetStore:
    return LeasedBudgetStore(ledger, max_units=max_units, seconds=1.0, clock=clock)


async def _tasks_run_to_their_first_wait() -> None:
    """One turn of the event loop: the tasks just created run, in order, up to their first
    wait (the ledger's gate). No clock is involved."""
    await asyncio.sleep(0)


async def test_concurrent_requests_share_one_refill() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    ledger.gate.clear()
    pending = [asyncio.create_task(store.consume([DAY, MONTH], 1)) for _ in range(50)]
    await _tasks_run_to_their_first_wait()
    ledger.gate.set()
    results = await asyncio.gather(*pending)
    assert len(ledger.reserves) == 1
    assert all(r.allowed for r in results)
    assert sorted(r.used[0] for r in results) == list(range(1, 51))
    assert ledger.counters[DAY.key] == 100  # one block of max_units, 50 of it still unused
    await store.close()


async def test_a_lease_never_hands_out_more_than_it_holds() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    results = await asyncio.gather(*(store.consume([DAY], 3) for _ in range(25)))
    assert all(r.allowed for r in results)
    # a block of 10 serves three requests of 3; each fourth needs a renewal giving back 1
    assert ledger.blocks == [10] * 9
    assert [back for _, back in ledger.reserves] == [0] + [1] * 8
    await store.close()
    assert ledger.counters[DAY.key] == 75


async def test_leases_shrink_near_the_limit_and_the_limit_is_spent_exactly() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    window = BudgetWindow("budget:{c1}:api_calls:day:2025-12-31", 200, 3660)
    allowed = 0
    while (await store.consume([window], 1)).allowed:
        allowed += 1
    assert allowed == 200
    assert ledger.blocks[0] == 200 // ROOM_DIVISOR
    assert ledger.blocks[-ROOM_DIVISOR:] == [1] * ROOM_DIVISOR  # room < divisor: one unit each
    assert ledger.counters[window.key] == 200
    refused = await store.consume([window], 1)
    assert (refused.allowed, refused.exceeded_index, refused.used) == (False, 0, (200,))


async def test_a_denial_is_asked_of_the_ledger_and_shared_with_waiters() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    window = BudgetWindow("k", 50, 60)
    ledger.counters["k"] = 48  # the other workers' consumption and leases
    assert (await store.consume([window], 2)).used == (50,)
    ledger.gate.clear()
    pending = [asyncio.create_task(store.consume([window], cost)) for cost in (2, 3, 2, 1)]
    await _tasks_run_to_their_first_wait()
    ledger.gate.set()
    results = await asyncio.gather(*pending)
    assert [r.allowed for r in results] == [False] * 4
    assert all(r.used == (50,) and r.exceeded_index == 0 for r in results)
    # the waiters as large as the refused request took its answer; the smaller one asked itself
    assert [cost for cost, _ in ledger.reserves] == [2, 2, 1]


async def test_unused_units_go_back_after_the_lease_ages() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    await store.consume([DAY, MONTH], 1)
    clock.now += 0.5
    await store.sweep()
    assert ledger.released == []
    clock.now += 0.5
    await store.sweep()
    assert ledger.released == [((DAY.key, MONTH.key), 9)]
    assert (ledger.counters[DAY.key], ledger.counters[MONTH.key]) == (1, 1)
    await store.sweep()
    assert len(ledger.released) == 1  # given back once only


async def test_an_aged_lease_is_renewed_with_its_give_back_in_the_same_call() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    await store.consume([DAY], 1)
    clock.now += 1.0
    result = await store.consume([DAY], 1)
    assert ledger.reserves == [(1, 0), (1, 9)]
    assert result.used == (2,)
    assert ledger.counters[DAY.key] == 11


async def test_close_gives_everything_back_and_closes_the_ledger() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    other = BudgetWindow("budget:{c2}:api_calls:day:2025-12-31", 10_000, 3660)
    for _ in range(7):
        await store.consume([DAY, MONTH], 1)
    await store.consume([other], 5)
    await store.close()
    assert ledger.closed
    assert ledger.counters == {DAY.key: 7, MONTH.key: 7, other.key: 5}


async def test_close_waits_for_a_refill_in_flight() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    ledger.gate.clear()
    request = asyncio.create_task(store.consume([DAY], 1))
    await _tasks_run_to_their_first_wait()
    closing = asyncio.create_task(store.close())
    await _tasks_run_to_their_first_wait()
    ledger.gate.set()
    assert (await request).allowed
    await closing
    assert ledger.counters[DAY.key] == 1


async def test_a_new_period_takes_a_new_lease_and_the_old_one_goes_back() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    await store.consume([DAY, MONTH], 1)
    next_day = BudgetWindow("budget:{c1}:api_calls:day:2026-01-01", 10_000, 86_460)
    next_month = BudgetWindow("budget:{c1}:api_calls:month:2026-01", 100_000, 86_460)
    assert (await store.consume([next_day, next_month], 1)).used == (1, 1)
    clock.now += 1.0
    await store.sweep()
    assert ledger.counters == {DAY.key: 1, MONTH.key: 1, next_day.key: 1, next_month.key: 1}


async def test_a_changed_limit_takes_a_new_lease() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    await store.consume([BudgetWindow("k", 1000, 60)], 1)
    assert not (await store.consume([BudgetWindow("k", 5, 60)], 1)).allowed  # 10 reserved > 5
    assert len(ledger.reserves) == 2


async def test_peek_leaves_out_this_process_unused_units() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    for _ in range(3):
        await store.consume([DAY, MONTH], 1)
    assert ledger.counters[DAY.key] == 100
    assert (await store.peek([DAY], 0)).used == (3,)
    assert (await store.peek([MONTH, DAY], 2)).used == (5, 5)


async def test_a_ledger_failure_reaches_every_waiter_and_loses_the_give_back() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock, max_units=10)
    await store.consume([DAY], 1)
    clock.now += 1.0
    ledger.gate.clear()
    ledger.failing = True
    pending = [asyncio.create_task(store.consume([DAY], 1)) for _ in range(3)]
    await _tasks_run_to_their_first_wait()
    ledger.gate.set()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, DependencyUnavailableError) for r in results)
    assert len(ledger.reserves) == 2
    ledger.failing = False
    await store.close()
    # the 9 sent with the failed call are never sent again: at worst they stay counted
    assert ledger.released == []


async def test_a_cancelled_request_does_not_cancel_the_refill_others_wait_for() -> None:
    ledger, clock = FakeLedger(), Clock()
    store = _store(ledger, clock)
    ledger.gate.clear()
    first = asyncio.create_task(store.consume([DAY], 1))
    second = asyncio.create_task(store.consume([DAY], 1))
    await _tasks_run_to_their_first_wait()
    first.cancel()
    ledger.gate.set()
    assert (await second).allowed
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(ledger.reserves) == 1
    await store.close()


async def test_no_lease_size_means_the_ledger_itself() -> None:
    ledger = FakeLedger()
    assert leased(ledger, max_units=0, seconds=1.0) is ledger
    assert isinstance(leased(ledger, max_units=1, seconds=1.0), LeasedBudgetStore)


async def test_the_sweeper_gives_back_without_any_request() -> None:
    ledger = FakeLedger()
    store = LeasedBudgetStore(ledger, max_units=10, seconds=0.05)
    await store.consume([DAY], 1)

    async def released() -> bool:
        return bool(ledger.released)

    await eventually_async(released, 1, what="the sweeper's give-back")
    assert ledger.counters[DAY.key] == 1
    await store.close()
