"""Through the real Envoy: shadowed stages record but never deny; a reload under load loses nothing.

Shadow: the stack runs (as every stack) with the real OPA and Redis, and
`shadow: {authorize, policy}` globally.
Reload: a role gains a permission in the gateway config, which is re-rendered and reloaded
(admin Reload) while requests keep flowing; every request gets the old or the new decision.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from authz_service._proto.gateway.admin.v1 import admin_pb2 as pb
from authz_service._proto.gateway.admin.v1 import admin_pb2_grpc as pb_grpc
from authz_service.audit.framing import decode_record, read_frames
from tests.e2e._gateway_stack import GatewayStack, StackOptions, wait_until

LOAD_WORKERS = 3
MAX_REQUESTS = 1500  # bounded: the loop ends after this many even if the reload never lands


def _metric(stack: GatewayStack, stage: str, code: str) -> float:
    url = f"http://127.0.0.1:{stack.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    needle = f'authz_shadow_denials_total{{code="{code}",stage="{stage}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.split()[-1])
    return 0.0


def _journaled_shadow_denials(journals: Path) -> list[list[str]]:
    """The shadow_denials of every record in the stack's audit journals."""
    return [
        decode_record(payload)["shadow_denials"]
        for segment in sorted(journals.glob("*/*.journal"))
        for _, payload in read_frames(segment.read_bytes(), 0).payloads
    ]


def test_shadowed_stages_record_but_never_deny(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
) -> None:
    stack = gateway_stack_factory(
        StackOptions(
            config_overrides={"shadow": {"authorize": "shadow", "policy": "shadow"}},
            entry_points=("plant",),
        )
    )
    # PLANT's customer role lacks reports:read, and /api/v1/reports is paid-only
    token = stack.sign_token(customer_id=f"cust-{time.monotonic_ns()}", plan="trial",
                             trial_mode=True)  # fmt: skip
    before = (
        _metric(stack, "authorize", "permission_denied"),
        _metric(stack, "policy", "paid_only"),
    )
    first = stack.request("plant", "GET", "/api/v1/reports", token=token)
    assert first.status == 200, first.body
    second = stack.request("plant", "GET", "/api/v1/reports", token=token)
    assert second.status == 200
    # the budget stays enforced: the trial's 10 reports a day at 5 units each are used up
    third = stack.request("plant", "GET", "/api/v1/reports", token=token)
    assert third.status == 402
    # and authentication too
    assert stack.request("plant", "GET", "/api/v1/reports").status == 401
    after = (
        _metric(stack, "authorize", "permission_denied"),
        _metric(stack, "policy", "paid_only"),
    )
    assert after == (before[0] + 3, before[1] + 3)
    wait_until(
        lambda: (
            _journaled_shadow_denials(stack.journal_dir).count(
                ["authorize:permission_denied", "policy:paid_only"]
            )
            >= 3
        ),
        "three audit rows with both shadow denials",
        timeout=15,
    )


def _load(
    stack: GatewayStack, token: str, stop: threading.Event, out: list[tuple[float, int | str]]
) -> None:
    while not stop.is_set() and len(out) < MAX_REQUESTS:
        started = time.monotonic()
        try:
            status: int | str = stack.request("plant", "POST", "/api/v1/orders", token=token).status
        except OSError as error:
            status = repr(error)
        out.append((started, status))


def test_reload_under_load_changes_the_decision_without_a_failed_request(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
) -> None:
    stack = gateway_stack_factory(StackOptions(entry_points=("plant",)))
    token = stack.sign_token(roles=("viewer",), customer_id=f"cust-{time.monotonic_ns()}")
    assert stack.request("plant", "POST", "/api/v1/orders", token=token).status == 403
    results: list[Any] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=_load, args=(stack, token, stop, results))
        for _ in range(LOAD_WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(results) >= 30, "some requests before the reload", timeout=20)
        viewer = ["orders:read", "orders:write", "profile:read"]
        stack.options.config_overrides = {"rbac": {"PLANT": {"viewer": viewer}}}
        stack.rerender()
        with grpc.insecure_channel(f"127.0.0.1:{stack.ports['admin']}") as channel:
            stub = pb_grpc.GatewayAdminStub(channel)  # type: ignore[no-untyped-call]
            reply = stub.Reload(pb.ReloadRequest(), timeout=10)
        reloaded_at = time.monotonic()
        assert (reply.applied, reply.error, reply.config_revision) == (True, "", stack.revision)
        wait_until(lambda: len(results) >= 30 + 60, "requests after the reload", timeout=30)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
    statuses = [status for _, status in results]
    assert set(statuses) <= {200, 403}, [s for s in statuses if s not in (200, 403)][:5]
    assert 403 in statuses
    assert all(status == 200 for started, status in results if started > reloaded_at)
