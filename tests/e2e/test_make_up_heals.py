"""`make up` heals: whichever part is SIGKILLed, or hangs (SIGSTOP), comes back on its own ports
and data, and the gateway answers again; a part that keeps exiting stops the stack, naming it and
its log."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_service import health_probe
from devstack import devkey
from devstack.stackstate import StackState, Tracked
from tests.e2e._make_up import Running, audit_rows, get, group_members, make_up
from tests.support.waiting import eventually

PROBLEM_BASE = "https://gateway.example/problems/"
HEALTH_COMPONENTS = ("", "authz.opa", "authz.redis", "authz.audit")
# one of each kind: datastores, the gateway's own processes, an Envoy (PLANT: CP forwards to it)
PARTS = ("postgres", "redis", "opa", "backend", "authz", "shipper", "envoy plant", "envoy cp")
BACK_WITHIN_S = 90.0  # a restart waits for the part's readiness; PostgreSQL recovers first
CRASH_LOOP_WITHIN_S = 120.0  # five failed starts, backoff 0.5 s doubling: about 30 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with make_up(tmp_path_factory.mktemp("make-up-heals"), "--free-ports") as running:
        yield running


def _child(state: StackState, name: str) -> Tracked:
    (child,) = [c for c in state.children if c.name == name]
    return child


def _answers_again(stack: Running) -> bool:
    """A 200 through CP (CP, then PLANT, then the backend) and a 401 problem without a token."""
    cp = stack.state.urls["cp"]
    token = devkey.load(stack.var_dir).sign(roles=["customer"], customer="cust-heal")
    status, _, body = get(f"{cp}/api/v1/me", token=token)
    if status != 200:
        return False
    assert body["headers"]["x-customer-id"] == "cust-heal"
    status, headers, body = get(f"{cp}/api/v1/me")
    if status != 401:
        return False
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == PROBLEM_BASE + "token_missing"
    return True


def _every_component_serving(stack: Running) -> bool:
    """The authz service's health, per component, says SERVING again."""
    address = f"127.0.0.1:{stack.state.ports['authz']}"
    return all(health_probe.serving(address, component) for component in HEALTH_COMPONENTS)


def _restarted(stack: Running, name: str, old_pid: int) -> Tracked | None:
    child = _child(stack.refresh(), name)
    return child if child.pid != old_pid and child.alive() else None


@pytest.mark.parametrize("name", PARTS)
def test_a_killed_part_comes_back_and_the_gateway_answers_again(stack: Running, name: str) -> None:
    ports = dict(stack.refresh().ports)
    assert _answers_again(stack)
    victim = _child(stack.state, name)
    os.kill(victim.pid, signal.SIGKILL)
    again = eventually(lambda: _restarted(stack, name, victim.pid), BACK_WITHIN_S,
                       what=f"{name} restarted")  # fmt: skip
    eventually(lambda: _answers_again(stack), BACK_WITHIN_S, what=f"the gateway after {name}",
               ignore=(OSError, ValueError))  # fmt: skip
    eventually(lambda: _every_component_serving(stack), BACK_WITHIN_S, what="authz health")
    output = stack.read_output()
    assert f"devstack: {name} exited; starting it again in" in output
    assert f"devstack: {name} restarted (PID {again.pid})" in output
    assert stack.state.ports == ports, "the same ports as before"
    assert stack.make.poll() is None, "the stack keeps running"


def test_postgresql_keeps_its_rows_across_a_kill(stack: Running) -> None:
    token = devkey.load(stack.var_dir).sign(roles=["customer"], customer="cust-kept")
    before = str(uuid.uuid4())
    assert get(f"{stack.state.urls['plant']}/api/v1/me", token=token, correlation=before)[0] == 200
    assert len(audit_rows(stack.state.database_url, {before: 1})) == 1
    victim = _child(stack.refresh(), "postgres")
    os.kill(victim.pid, signal.SIGKILL)
    eventually(lambda: _restarted(stack, "postgres", victim.pid), BACK_WITHIN_S,
               what="postgres restarted")  # fmt: skip
    eventually(lambda: _answers_again(stack), BACK_WITHIN_S, what="the gateway",
               ignore=(OSError, ValueError))  # fmt: skip
    after = str(uuid.uuid4())
    assert get(f"{stack.state.urls['plant']}/api/v1/me", token=token, correlation=after)[0] == 200
    rows = audit_rows(stack.state.database_url, {before: 1, after: 1})
    assert sorted(r["correlation_id"] for r in rows) == sorted([before, after])


@pytest.mark.parametrize("name", PARTS)
def test_a_hung_part_is_killed_and_restarted_and_the_gateway_answers_again(
    stack: Running, name: str
) -> None:
    """SIGSTOP freezes the part's whole process group: its ports accept, nothing answers, it
    never exits. Its liveness probe fails 3 times in a row (2 s apart), and it is restarted."""
    assert _answers_again(stack)
    said_before = len(stack.read_output())
    victim = _child(stack.refresh(), name)
    os.killpg(victim.pid, signal.SIGSTOP)
    try:
        again = eventually(lambda: _restarted(stack, name, victim.pid), BACK_WITHIN_S,
                           what=f"hung {name} restarted")  # fmt: skip
    finally:  # never leave a frozen process behind (e.g. when this fails)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGCONT)
    eventually(lambda: _answers_again(stack), BACK_WITHIN_S, what=f"the gateway after {name}",
               ignore=(OSError, ValueError))  # fmt: skip
    eventually(lambda: _every_component_serving(stack), BACK_WITHIN_S, what="authz health")
    output = stack.read_output()
    probe_failures = [line for line in output[said_before:].splitlines()
                      if "did not answer its liveness probe" in line]  # fmt: skip
    hung = f"devstack: {name} did not answer its liveness probe 3 times in a row; killing and "
    assert probe_failures == [hung + "restarting it"], "only the hung part, once"
    assert f"devstack: {name} restarted (PID {again.pid})" in output
    assert group_members({victim.pid}) == set(), "the frozen process group was killed whole"
    assert stack.make.poll() is None, "the stack keeps running"


def test_a_crash_loop_stops_the_stack_naming_the_part_and_its_log(stack: Running) -> None:
    """The authz service's runtime config turns unreadable: every restart exits at once."""
    runtime = Path(stack.var_dir).parent / "build" / "authz" / "runtime.json"
    runtime.write_text("{not json", encoding="utf-8")
    children = list(stack.refresh().children)
    os.kill(_child(stack.state, "authz").pid, signal.SIGKILL)
    stack.make.wait(CRASH_LOOP_WITHIN_S)
    output = stack.read_output()
    assert stack.make.returncode != 0, output
    assert "devstack: authz did not start again: authz exited with code 2 while starting" in output
    assert "devstack: authz is in a crash loop (5 restarts within 60s" in output
    assert f"Last lines of {stack.var_dir / 'logs' / 'authz.log'}:" in output
    assert str(runtime) in output.split("is in a crash loop", 1)[1], "the log names the cause"
    assert "devstack: stopped" in output
    assert [c.name for c in children if c.alive()] == []
    assert group_members({c.pid for c in children}) == set()
