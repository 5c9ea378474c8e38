"""make up's watch over its parts: any part that exits is started again on its own ports and
data, after an exponential backoff; a crash loop stops the stack, naming the part and its log."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.model import ServiceControl, ServiceUnavailable
from devstack.process import log_tail

CRASH_LOG_LINES = 15


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff first_delay, doubling, at most max_delay; `crash_loop_restarts` restarts of one
    part within `crash_loop_window` seconds, and it exits again: a crash loop."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 60.0


@dataclass
class _Watch:
    """One part's restart history."""

    restarts: list[float]
    due: float | None = None  # when the next start is due (None: running, or not seen down)


def supervise(
    parts: Mapping[str, ServiceControl],
    logs: Mapping[str, Path],
    say: Callable[[str], None],
    on_restart: Callable[[str, int | None], None],
    *,
    policy: RestartPolicy = RestartPolicy(),
    poll_seconds: float = 0.2,
) -> int:
    """Restart whatever exits until a crash loop (returns 1); a signal ends it otherwise."""
    watches = {name: _Watch([]) for name in parts}
    while True:
        for name, part in parts.items():
            if part.running:
                continue
            watch, now = watches[name], time.monotonic()
            watch.restarts = [t for t in watch.restarts if now - t < policy.crash_loop_window]
            if watch.due is None:
                if len(watch.restarts) >= policy.crash_loop_restarts:
                    say(_crash_loop(name, len(watch.restarts), policy, logs.get(name)))
                    return 1
                delay = min(policy.first_delay * 2 ** len(watch.restarts), policy.max_delay)
                watch.due = now + delay
                say(f"devstack: {name} exited; starting it again in {delay:g}s (restart "
                    f"{len(watch.restarts) + 1} within {policy.crash_loop_window:.0f}s; "
                    f"log {logs.get(name)})")  # fmt: skip
            elif now >= watch.due:
                watch.due = None
                watch.restarts.append(now)
                _restart(name, part, say, on_restart)
        time.sleep(poll_seconds)


def _restart(
    name: str,
    part: ServiceControl,
    say: Callable[[str], None],
    on_restart: Callable[[str, int | None], None],
) -> None:
    try:
        part.stop()  # reap it, and whatever of its process group is left
        part.start()  # same argv, ports, data and settings; waits until it is ready
    except ServiceUnavailable as error:
        say(f"devstack: {name} did not start again: {str(error).splitlines()[0]}")
        return
    on_restart(name, part.pid)
    say(f"devstack: {name} restarted (PID {part.pid})")


def _crash_loop(name: str, restarts: int, policy: RestartPolicy, log: Path | None) -> str:
    tail = log_tail(log, CRASH_LOG_LINES) if log is not None else "(no log)"
    return (
        f"devstack: {name} is in a crash loop ({restarts} restarts within "
        f"{policy.crash_loop_window:.0f}s, and it exited again); stopping everything. "
        f"Last lines of {log}:\n{tail}"
    )
