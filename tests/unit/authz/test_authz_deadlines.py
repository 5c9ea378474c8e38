"""The checks' deadlines on one timer: each passes on time, and only its own check is cut."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from authz_service.deadlines import Deadlines


async def _wait_for_deadline(deadlines: Deadlines, seconds: float) -> str:
    """A check whose pipeline never finishes: how it ended."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task, seconds)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not deadlines.overdue(task):
            raise
        return "overdue"
    finally:
        deadlines.finish(task)
    return "finished"


async def test_a_check_past_its_deadline_is_told_it_is_overdue() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    check = asyncio.create_task(_wait_for_deadline(deadlines, 0.01))
    assert await asyncio.wait_for(check, 10) == "overdue"
    assert check.cancelling() == 0, "the deadline's cancellation is withdrawn"


async def test_a_shorter_deadline_set_after_a_longer_one_still_passes_on_time() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    long = asyncio.create_task(_wait_for_deadline(deadlines, 60))
    await asyncio.sleep(0)  # the long one's timer is armed first
    short = asyncio.create_task(_wait_for_deadline(deadlines, 0.01))
    assert await asyncio.wait_for(short, 10) == "overdue"
    assert not long.done(), "only the check whose deadline passed is cut"
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def test_every_check_of_many_passes_its_deadline() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    checks = [
        asyncio.create_task(_wait_for_deadline(deadlines, 0.002 * (i % 7))) for i in range(50)
    ]
    assert await asyncio.wait_for(asyncio.gather(*checks), 10) == ["overdue"] * 50


async def test_a_deadline_cancellation_the_check_swallowed_is_still_withdrawn() -> None:
    """A stage that turns the cancellation into its own error leaves no pending cancel."""
    deadlines = Deadlines(asyncio.get_running_loop())

    async def check() -> int:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task, 0.01)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        finally:
            deadlines.finish(task)
        return task.cancelling()

    assert await asyncio.wait_for(check(), 10) == 0


async def test_a_cancellation_by_the_caller_is_not_read_as_the_deadline() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    check = asyncio.create_task(_wait_for_deadline(deadlines, 60))
    await asyncio.sleep(0)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check


async def test_a_caller_cancelling_as_the_deadline_passes_stays_cancelled() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    started = asyncio.Event()

    async def check() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task, 0)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "overdue" if deadlines.overdue(task) else "cancelled"
        finally:
            deadlines.finish(task)
        return "finished"

    running = asyncio.create_task(check())
    await started.wait()
    running.cancel()  # the caller's cancellation, before the deadline's timer runs
    assert await asyncio.wait_for(running, 10) == "cancelled"


async def test_a_check_that_finished_is_never_cut_by_its_old_deadline() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    fired = asyncio.Event()

    async def quick_then_wait() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task, 0.01)
        deadlines.finish(task)
        other = asyncio.create_task(_wait_for_deadline(deadlines, 0.02))
        assert await other == "overdue"  # the timer ran past this task's old deadline
        fired.set()

    await asyncio.wait_for(quick_then_wait(), 10)
    assert fired.is_set()
