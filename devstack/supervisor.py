"""make up's watch over its parts: restart the restartable ones with a backoff, else stop all."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from devstack.model import ServiceUnavailable

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


def supervise(
    watched: Mapping[str, Callable[[], bool]],
    restarts: Mapping[str, Callable[[], int | None]],
    logs: Path,
    say: Callable[[str], None],
) -> int:
    """Until a part that cannot be restarted exits (then 1); restarted parts wait longer and
    longer between attempts while they keep failing."""
    failures: dict[str, int] = {}
    next_try: dict[str, float] = {}
    while True:
        for name, alive in watched.items():
            if alive():
                continue
            log = logs / f"{name}.log"
            restart = restarts.get(name)
            if restart is None:
                say(f"devstack: {name} exited; stopping everything (see {log})")
                return 1
            if time.monotonic() < next_try.get(name, 0.0):
                continue
            count = failures[name] = failures.get(name, 0) + 1
            delay = RESTART_BACKOFF_SECONDS[min(count, len(RESTART_BACKOFF_SECONDS)) - 1]
            next_try[name] = time.monotonic() + delay
            say(f"devstack: {name} exited; restarting it (attempt {count}, see {log})")
            try:
                restart()
            except ServiceUnavailable as error:
                say(f"devstack: {name} did not start again: {error}")
        time.sleep(0.5)
