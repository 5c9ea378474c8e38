"""make up's supervisor: any part that exits, or fails its liveness probe N times in a row, is
started again; a crash loop stops the stack."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from devstack.model import ServiceUnavailable
from devstack.supervisor import RestartPolicy, Supervisor, supervise

FAST = RestartPolicy(first_delay=0.01, max_delay=0.04, crash_loop_restarts=3,
                     crash_loop_window=60.0)  # fmt: skip


class FakePart:
    """A part the test kills by hand; a start revives it unless it `fails_to_start`."""

    def __init__(self, *, fails_to_start: bool = False) -> None:
        self.running = True
        self.pid: int | None = 100
        self.starts = 0
        self.fails_to_start = fails_to_start
        self.answers = True  # what its liveness probe says
        self.probed = 0
        self.killed = 0

    def start(self) -> None:
        self.starts += 1
        if self.fails_to_start:
            raise ServiceUnavailable("authz exited with code 2 while starting")
        self.running = True
        self.pid = 100 + self.starts

    def stop(self) -> None:
        self.running = False

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def alive(self) -> bool:
        self.probed += 1
        return self.answers

    def kill(self) -> None:
        self.killed += 1
        self.running = False


def test_a_part_that_exits_is_started_again_and_a_crash_loop_stops_everything(
    tmp_path: Path,
) -> None:
    log = tmp_path / "authz.log"
    log.write_text("starting\nruntime.json: not valid JSON\n")
    healthy, crashing = FakePart(), FakePart()
    said: list[str] = []
    restarted: list[tuple[str, int | None]] = []

    def say(message: str) -> None:
        said.append(message)
        if len(restarted) == 1 and healthy.starts == 1:
            crashing.running = False  # then it keeps exiting: every restart fails
            crashing.fails_to_start = True

    healthy.running = False  # the first exit: one restart brings it back
    code = supervise({"redis": healthy, "authz": crashing}, {"authz": log}, say,
                     lambda name, pid: restarted.append((name, pid)), policy=FAST,
                     poll_seconds=0.001)  # fmt: skip
    assert code == 1
    assert restarted == [("redis", 101)]
    assert healthy.running
    assert crashing.starts == FAST.crash_loop_restarts
    assert any(m.startswith("devstack: redis exited; starting it again in 0.01s") for m in said)
    assert "devstack: redis restarted (PID 101)" in said
    assert said.count("devstack: authz did not start again: authz exited with code 2 while "
                      "starting") == FAST.crash_loop_restarts  # fmt: skip
    last = said[-1]
    assert last.startswith("devstack: authz is in a crash loop (3 restarts within 60s")
    assert f"Last lines of {log}:" in last
    assert last.endswith("runtime.json: not valid JSON")


def test_the_backoff_doubles_up_to_its_bound(tmp_path: Path) -> None:
    part = FakePart(fails_to_start=True)
    part.running = False
    said: list[str] = []
    policy = RestartPolicy(first_delay=0.001, max_delay=0.004, crash_loop_restarts=5)
    assert supervise({"opa": part}, {}, said.append, lambda _n, _p: None, policy=policy,
                     poll_seconds=0.0005) == 1  # fmt: skip
    delays = [m.split(" in ")[1].split("s ")[0] for m in said if "starting it again" in m]
    assert delays == ["0.001", "0.002", "0.004", "0.004", "0.004"]
    assert "opa is in a crash loop (5 restarts" in said[-1]
    assert "Last lines of None:\n(no log)" in said[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class InlineProbes:
    """Runs each probe at once; `hung` probes never finish (a part that accepts, never answers)."""

    def __init__(self) -> None:
        self.hung = False

    def submit(self, fn: Callable[[], bool], /) -> Future[bool]:
        future: Future[bool] = Future()
        if not self.hung:
            future.set_result(fn())
        return future


PROBED = RestartPolicy(first_delay=0.5, probe_period=2.0, probe_timeout=1.0, probe_failures=3)


def _watching(
    part: FakePart, probes: InlineProbes | None = None
) -> tuple[Supervisor, Clock, list[str]]:
    clock, said = Clock(), list[str]()
    probes = probes or InlineProbes()
    supervisor = Supervisor({"redis": part}, {}, said.append, lambda _n, _p: None,
                            policy=PROBED, probes=probes, clock=clock)  # fmt: skip
    return supervisor, clock, said


def _periods(supervisor: Supervisor, clock: Clock, count: int) -> None:
    """`count` probe periods, stepped as the loop would (several steps a period)."""
    for _ in range(count * 4):
        clock.now += PROBED.probe_period / 4
        assert supervisor.step() is None


def test_a_probe_failing_one_time_less_than_the_threshold_restarts_nothing() -> None:
    part = FakePart()
    supervisor, clock, said = _watching(part)
    part.answers = False
    _periods(supervisor, clock, PROBED.probe_failures - 1)
    assert part.probed == PROBED.probe_failures - 1
    part.answers = True  # answering again resets the count
    _periods(supervisor, clock, 1)
    part.answers = False
    _periods(supervisor, clock, PROBED.probe_failures - 1)
    assert part.killed == 0
    assert part.starts == 0
    assert said == []


def test_a_probe_failing_the_threshold_in_a_row_kills_and_restarts_the_part() -> None:
    part = FakePart()
    supervisor, clock, said = _watching(part)
    part.answers = False
    _periods(supervisor, clock, PROBED.probe_failures + 1)
    assert part.killed == 1
    assert said[0] == ("devstack: redis did not answer its liveness probe 3 times in a row; "
                       "killing and restarting it")  # fmt: skip
    assert said[1].startswith("devstack: redis exited; starting it again in 0.5s (restart 1")
    assert part.starts == 1, "restarted through the exit path, after its backoff"
    assert said[2] == "devstack: redis restarted (PID 101)"


def test_a_probe_that_never_answers_fails_by_its_timeout() -> None:
    part, probes = FakePart(), InlineProbes()
    probes.hung = True
    supervisor, clock, said = _watching(part, probes)
    _periods(supervisor, clock, PROBED.probe_failures + 1)
    assert part.killed == 1
    assert "did not answer its liveness probe 3 times in a row" in said[0]


def test_a_part_down_or_starting_is_not_probed() -> None:
    part = FakePart()
    supervisor, clock, said = _watching(part)
    part.running = False  # exited: waits for its backoff, then starts again
    while part.starts == 0:
        clock.now += 0.25
        supervisor.step()
        assert part.probed == 0, "not probed while down or starting"
    restarted = clock.now
    while clock.now + 0.25 < restarted + PROBED.probe_period:
        clock.now += 0.25
        supervisor.step()
    assert part.probed == 0, "the restarted part runs a full period before its first probe"
    clock.now += 0.25
    supervisor.step()
    assert part.probed == 1
    assert part.killed == 0
    assert said[-1] == "devstack: redis restarted (PID 101)"
