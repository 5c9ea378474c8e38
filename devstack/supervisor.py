"""make up's watch over its parts: any part that exits, or stops answering its liveness probe, is
started again on its own ports and data after an exponential backoff; a crash loop stops the
stack, naming the part and its log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from devstack.model import ServiceControl, ServiceUnavailable
from devstack.process import log_tail

CRASH_LOG_LINES = 15


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff first_delay, doubling, at most max_delay; `crash_loop_restarts` restarts of one
    part within `crash_loop_window` seconds, and it exits again: a crash loop. Every running
    part is probed for liveness every `probe_period` s (0: never); a probe not answered within
    `probe_timeout` s fails, and `probe_failures` failures in a row kill and restart it."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 60.0
    probe_period: float = 2.0
    probe_timeout: float = 2.0
    probe_failures: int = 3


class ProbeRunner(Protocol):
    """Where probes run: off the watch loop, so a hung part's probe holds up nothing else."""

    def submit(self, fn: Callable[[], bool], /) -> Future[bool]: ...


class ThreadProbes:
    """Each probe in a daemon thread of its own: a probe left behind by its timeout (it ends on
    its own socket timeout) never queues another part's probe behind it, as a pool could."""

    def submit(self, fn: Callable[[], bool], /) -> Future[bool]:
        future: Future[bool] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as error:
                future.set_exception(error)

        threading.Thread(target=run, name="liveness", daemon=True).start()
        return future


@dataclass
class _Watch:
    """One part's restart history and liveness record."""

    restarts: list[float] = field(default_factory=list)
    due: float | None = None  # when the next start is due (None: running, or not seen down)
    failures: int = 0  # liveness probes failed in a row
    probe: Future[bool] | None = None
    probe_sent: float = 0.0
    next_probe: float = 0.0


class Supervisor:
    """One `step()` looks at every part: restarts what is down (after its backoff), probes what
    runs, kills what failed its probe too often. `supervise()` steps until a crash loop."""

    def __init__(
        self,
        parts: Mapping[str, ServiceControl],
        logs: Mapping[str, Path],
        say: Callable[[str], None],
        on_restart: Callable[[str, int | None], None],
        *,
        policy: RestartPolicy,
        probes: ProbeRunner,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parts, self.logs, self.say, self.on_restart = parts, logs, say, on_restart
        self.policy, self.probes, self.clock = policy, probes, clock
        first_probe = clock() + policy.probe_period
        self.watches = {name: _Watch(next_probe=first_probe) for name in parts}

    def step(self) -> int | None:
        """None: keep watching; 1: a crash loop (already said)."""
        for name, part in self.parts.items():
            watch = self.watches[name]
            if part.running:
                self._probe(name, part, watch)
            elif self._down(name, part, watch):
                return 1
        return None

    def _probe(self, name: str, part: ServiceControl, watch: _Watch) -> None:
        policy, now = self.policy, self.clock()
        if policy.probe_period <= 0:
            return
        if watch.probe is not None:
            if watch.probe.done():
                answered = watch.probe.exception() is None and watch.probe.result()
                watch.probe = None
                watch.failures = 0 if answered else watch.failures + 1
            elif now - watch.probe_sent >= policy.probe_timeout:
                watch.probe = None  # left to finish on its own socket timeout
                watch.failures += 1
        if watch.failures >= policy.probe_failures:
            self.say(f"devstack: {name} did not answer its liveness probe {watch.failures} "
                     f"times in a row; killing and restarting it")  # fmt: skip
            watch.failures = 0
            part.kill()  # `running` turns False: restarted below like any part that exited
            return
        if watch.probe is None and now >= watch.next_probe:
            watch.probe, watch.probe_sent = self.probes.submit(part.alive), now
            watch.next_probe = now + policy.probe_period

    def _down(self, name: str, part: ServiceControl, watch: _Watch) -> bool:
        policy, now = self.policy, self.clock()
        watch.restarts = [t for t in watch.restarts if now - t < policy.crash_loop_window]
        if watch.due is None:
            if len(watch.restarts) >= policy.crash_loop_restarts:
                self.say(_crash_loop(name, len(watch.restarts), policy, self.logs.get(name)))
                return True
            delay = min(policy.first_delay * 2 ** len(watch.restarts), policy.max_delay)
            watch.due = now + delay
            self.say(f"devstack: {name} exited; starting it again in {delay:g}s (restart "
                     f"{len(watch.restarts) + 1} within {policy.crash_loop_window:.0f}s; "
                     f"log {self.logs.get(name)})")  # fmt: skip
        elif now >= watch.due:
            watch.due = None
            watch.restarts.append(now)
            _restart(name, part, self.say, self.on_restart)
            # a fresh process: no probe before it has run a full period, none of the old ones
            watch.probe, watch.failures = None, 0
            watch.next_probe = self.clock() + policy.probe_period
        return False


def supervise(
    parts: Mapping[str, ServiceControl],
    logs: Mapping[str, Path],
    say: Callable[[str], None],
    on_restart: Callable[[str, int | None], None],
    *,
    policy: RestartPolicy = RestartPolicy(),
    poll_seconds: float = 0.2,
) -> int:
    """Restart whatever exits or hangs until a crash loop (returns 1); a signal ends it else."""
    supervisor = Supervisor(parts, logs, say, on_restart, policy=policy, probes=ThreadProbes())
    while (code := supervisor.step()) is None:
        time.sleep(poll_seconds)
    return code


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
