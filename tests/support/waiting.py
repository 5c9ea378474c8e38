"""Waiting on a condition, never on the clock: `eventually(predicate, timeout)` (and its
coroutine twin `eventually_async`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.05


def eventually(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (OSError,),
    interval: float = POLL_SECONDS,
) -> T:
    """Call `predicate` until it returns something truthy, and return that; an AssertionError
    naming `what` after `timeout` seconds. The `ignore` exceptions count as not yet (a server
    not listening yet refuses the connection)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as error:
            last = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            cause = f" (last error: {last!r})" if last is not None else ""
            name = what or getattr(predicate, "__name__", "the condition")
            raise AssertionError(f"timed out after {timeout:g}s waiting for {name}{cause}")
        time.sleep(interval)


async def eventually_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,
    *,
    what: str = "",
    interval: float = POLL_SECONDS,
) -> T:
    """`eventually` for a coroutine predicate, waiting on the test's event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", "the condition")
            raise AssertionError(f"timed out after {timeout:g}s waiting for {name}")
        await asyncio.sleep(interval)
