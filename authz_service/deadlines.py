"""The checks' deadlines on one loop timer: a check registers its deadline in a dict, not a timer.

`asyncio.timeout()` arms and cancels a loop timer for every check (about 4 µs of a check on
uvloop, two `getpid()` calls of Python 3.11's loop look-ups included). Here every check in
flight has its deadline in a dict and one timer, armed for the earliest, cancels the checks
whose deadline has passed, the way `asyncio.timeout()` does; `overdue()` tells the check that
the cancellation was its deadline. The timer fires about once per check timeout, not per check.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

# libuv's timers count whole milliseconds: a timer may fire up to this much before its time,
# and a deadline that close is treated as passed rather than armed again for a spin
_RESOLUTION_SECONDS = 0.001

Task = asyncio.Task[Any]


class Deadlines:
    """The deadlines of the checks in flight on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: dict[Task, float] = {}
        self._overdue: set[Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, task: Task, seconds: float) -> None:
        """`task` is cancelled once `seconds` have passed, unless it finishes first."""
        when = self.loop.time() + seconds
        self._due[task] = when
        if when < self._timer_at:
            self._arm(when)

    def finish(self, task: Task) -> None:
        """The check is over (answered, failed or cancelled): its deadline no longer applies,
        and a cancellation the deadline made is withdrawn (as `asyncio.timeout()` does), even
        one the check never saw as such."""
        self._due.pop(task, None)
        if self._overdue and task in self._overdue:
            self._overdue.discard(task)
            task.uncancel()

    def overdue(self, task: Task) -> bool:
        """True when the task's cancellation is its deadline's alone (the check then answers
        its timeout); False for a cancellation of its caller's, which must go on."""
        return task in self._overdue and task.cancelling() == 1

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time() + _RESOLUTION_SECONDS
        passed = [task for task, when in self._due.items() if when <= now]
        for task in passed:
            del self._due[task]
            if not task.done():
                self._overdue.add(task)
                task.cancel()
        if self._due:
            self._arm(min(self._due.values()))
