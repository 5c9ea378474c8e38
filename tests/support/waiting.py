"""Waiting on a condition, never on the clock: `eventually(predicate, timeout)`."""

from __future__ import annotations

import time
from collections.abc import Callable
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
