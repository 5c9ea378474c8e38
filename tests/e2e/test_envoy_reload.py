"""Re-rendering while Envoy runs applies new routes with no restart and no failed request."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable

import pytest

from tests.e2e._gateway_stack import GatewayStack, StackOptions
from tests.support.waiting import eventually

SLOW_PUBLIC = {
    "id": "slow-public",
    "match": {"path": "/api/v1/slow", "methods": ["GET"]},
    "entry_points": ["plant", "cp", "pp"],
    "upstream": "backend",
    "public": True,
    "timeout_ms": 5000,
}
NEW_ROUTE = {
    "id": "uploads-open",
    "match": {"path": "/api/v1/uploads", "methods": ["POST"]},
    "entry_points": ["plant", "cp", "pp"],
    "upstream": "backend",
    "public": True,
}
MAX_PROBES = 5000  # bounded load loop


def _stats(admin_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{admin_url}/stats", timeout=5) as response:
        text = response.read().decode()
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


class Prober:
    """Sends GET /health in a loop from a thread and records every status (0: no answer)."""

    def __init__(self, stack: GatewayStack) -> None:
        self.stack = stack
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.statuses) < MAX_PROBES:
            try:
                self.statuses.append(self.stack.request("plant", "GET", "/health").status)
            except OSError:
                self.statuses.append(0)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def probe_more(self, count: int = 10) -> None:
        """Wait until `count` more probes were answered (or failed)."""
        seen = len(self.statuses)
        _wait_for(lambda: len(self.statuses) >= min(seen + count, MAX_PROBES))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    eventually(check, timeout)


@pytest.fixture
def reloadable_stack(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]],
) -> GatewayStack:
    options_type, _ = gateway_stack_types
    return gateway_stack_factory(
        options_type(with_authz=False, entry_points=("plant",), extra_routes=[SLOW_PUBLIC])
    )


def test_rerender_applies_new_routes_without_restart_or_dropped_requests(
    reloadable_stack: GatewayStack,
) -> None:
    stack = reloadable_stack
    envoy = stack.envoys["plant"]
    pid_before = envoy.pid
    before = _stats(envoy.admin_url)
    revision_before = stack.revision
    assert stack.request("plant", "POST", "/api/v1/uploads", body=b"x").status == 404

    in_flight: dict[str, int] = {}

    def slow_request() -> None:
        in_flight["status"] = stack.request("plant", "GET", "/api/v1/slow?ms=1500").status

    slow = threading.Thread(target=slow_request)
    slow.start()
    # the slow request is inside Envoy (the only request so far)
    _wait_for(lambda: _stats(envoy.admin_url).get("http.plant.downstream_rq_active", 0) >= 1)
    with Prober(stack) as prober:
        prober.probe_more()
        revision_after = stack.rerender(extra_routes=[NEW_ROUTE])
        _wait_for(
            lambda: stack.request("plant", "POST", "/api/v1/uploads", body=b"x").status == 200
        )
        slow.join(timeout=10)
        prober.probe_more()  # and requests keep being answered after the change
    assert revision_after != revision_before
    assert in_flight == {"status": 200}
    assert len(prober.statuses) > 10
    assert set(prober.statuses) == {200}, f"failed probes: {prober.statuses.count(0)}"

    after = _stats(envoy.admin_url)
    assert envoy.pid == pid_before
    assert after["server.hot_restart_epoch"] == 0
    assert (
        after["http.plant.rds.plant_routes.update_success"]
        > before["http.plant.rds.plant_routes.update_success"]
    )
    # a route-only change never touched the listener, so no connection was drained
    assert (
        after["listener_manager.listener_modified"] == before["listener_manager.listener_modified"]
    )


def test_listener_change_is_applied_by_draining_not_dropping(
    reloadable_stack: GatewayStack,
) -> None:
    stack = reloadable_stack
    envoy = stack.envoys["plant"]
    before = _stats(envoy.admin_url)
    stack.options.config_overrides = {"limits": {"max_request_headers_kb": 32}}
    with Prober(stack) as prober:
        prober.probe_more()
        stack.rerender()
        big = {"x-big": "a" * 40_000}  # fits 60 KiB, not 32 KiB
        _wait_for(lambda: stack.request("plant", "GET", "/health", headers=big).status == 431)
        prober.probe_more()
    assert set(prober.statuses) == {200}
    after = _stats(envoy.admin_url)
    # PLANT's two listeners (public, internal for the hops), each drained and replaced once
    assert (
        after["listener_manager.listener_modified"]
        == before["listener_manager.listener_modified"] + 2
    )
    assert envoy.pid is not None
