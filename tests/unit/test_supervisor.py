"""make up's supervisor: any part that exits is started again; a crash loop stops the stack."""

from __future__ import annotations

from pathlib import Path

from devstack.model import ServiceUnavailable
from devstack.supervisor import RestartPolicy, supervise

FAST = RestartPolicy(first_delay=0.01, max_delay=0.04, crash_loop_restarts=3,
                     crash_loop_window=60.0)  # fmt: skip


class FakePart:
    """A part the test kills by hand; a start revives it unless it `fails_to_start`."""

    def __init__(self, *, fails_to_start: bool = False) -> None:
        self.running = True
        self.pid: int | None = 100
        self.starts = 0
        self.fails_to_start = fails_to_start

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
