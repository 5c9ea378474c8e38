"""The journal's bound, a shipper killed inside a transaction, a check Envoy cancels.

Each test runs a stack of its own (settings of its own), through the real Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from authz_service.audit.verify import verify
from devstack import PostgresService
from tests.e2e._audit_stack import (
    AuditDatabase,
    Sent,
    audit_database,
    audited_stack_options,
    complete,
    kill_shipper,
    restart_shipper,
    rows_by_correlation,
    send_concurrently,
    send_mixed,
    wait_for_rows,
)
from tests.e2e._gateway_stack import GatewayStack, StackOptions
from tests.support.waiting import eventually

PROBLEM = "https://gateway.example/problems/"


@pytest.fixture
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_backlog")


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    eventually(check, timeout, what=what, ignore=())


def _clean(audit_db: AuditDatabase) -> None:
    report = asyncio.run(verify(audit_db.reader_dsn))
    assert report.findings == []


def test_the_journal_at_its_bound_refuses_with_503_and_loses_nothing(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]],
    audit_db: AuditDatabase,
) -> None:
    stack_options, _ = gateway_stack_types
    bound = audit_db.authz_env(
        AUTHZ_AUDIT_JOURNAL_MAX_BYTES=str(64 * 1024),
        AUTHZ_AUDIT_JOURNAL_HEADROOM_BYTES=str(8 * 1024),
        AUTHZ_AUDIT_JOURNAL_SEGMENT_BYTES=str(8 * 1024),
        AUTHZ_AUDIT_JOURNAL_SCAN_SECONDS="0.1",
    )
    # the subject is the bound: a check slowed past Envoy's deadline by a loaded machine
    # (a 503 authz_unavailable, journaled as cancelled) must not pass for the bound's 503
    stack = gateway_stack_factory(stack_options(
        authz_env=bound, shipper_env=audit_db.shipper_env(), entry_points=("plant",),
        authz_timeout_ms=10_000,
    ))  # fmt: skip
    kill_shipper(stack)  # PostgreSQL is fine; nothing takes the journal away
    token = stack.sign_token(sub="audit-bound")
    sent: list[Sent] = []
    while not sent or sent[-1].status != 503:
        assert len(sent) < 3000, "the journal never reached its bound"
        sent.append(send_mixed(stack, len(sent), token, timeout=30))
    first_refusal = stack.request("plant", "GET", "/api/v1/orders", token=token)
    assert first_refusal.status == 503
    assert first_refusal.json()["type"] == PROBLEM + "audit_unavailable", first_refusal.body
    for _ in range(40):  # past the bound: refused, with a problem+json body, until it drains
        mine = str(uuid.uuid4())
        reply = stack.request("plant", "GET", "/api/v1/orders", token=token,
                              headers={"x-correlation-id": mine})  # fmt: skip
        assert reply.status == 503
        assert reply.content_type == "application/problem+json"
        body = reply.json()
        assert (body["type"], body["correlation_id"]) == (PROBLEM + "audit_unavailable", mine)
        assert reply.headers["retry-after"] == "5"
        sent.append(Sent(mine, True, 503, reply.headers["x-request-id"]))
    restart_shipper(stack)  # the backlog goes to PostgreSQL, the segments go, checks resume
    _until(lambda: send_mixed(stack, 0, token).status == 200, "checks to be answered again")
    answered = [s for s in sent if s.answered]
    assert {s.status for s in answered} == {200, 401, 503}
    ids = [s.correlation_id for s in answered]
    found = wait_for_rows(audit_db.reader_dsn, ids, lambda rows: len(rows) == 1 and bool(
        rows[0]["completed_at"]))  # fmt: skip
    for request in answered:
        (row,) = found[request.correlation_id]
        assert (row["request_id"], row["status_code"]) == (request.request_id, request.status)
        if request.status == 503:  # journaled as a refusal within the headroom, or Envoy's only
            assert row["problem_type"] in ("audit_unavailable", None), row
        else:
            assert complete(row), row
    journaled = sum(1 for s in answered if s.status == 503
                    and found[s.correlation_id][0]["decision"] is not None)  # fmt: skip
    assert journaled > 0, "refusals are journaled up to the headroom"
    assert journaled < sum(1 for s in answered if s.status == 503), "and only up to it"
    _clean(audit_db)


@contextlib.contextmanager
def _ship_state_locked(audit_db: AuditDatabase) -> Iterator[psycopg.Connection]:
    """The shipper's offsets table locked against writes: its transaction stops right there,
    after its rows are inserted and before it can commit."""
    with psycopg.connect(audit_db.superuser) as conn:
        conn.execute("LOCK TABLE gateway_audit_ship_state IN EXCLUSIVE MODE")
        yield conn
        conn.rollback()


def _shipper_waiting_on_the_lock(audit_db: AuditDatabase) -> bool:
    with psycopg.connect(audit_db.superuser, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'gateway-audit-shipper' AND wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


def test_sigkill_of_the_shipper_mid_batch_loses_and_duplicates_nothing(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]],
    audit_db: AuditDatabase,
) -> None:
    options = audited_stack_options(
        gateway_stack_types,
        audit_db,
        AUTHZ_SHIPPER_BATCH_ROWS="100",
        AUTHZ_SHIPPER_HOLD_SECONDS="0.5",
    )
    stack = gateway_stack_factory(options)
    kill_shipper(stack)
    token = stack.sign_token(sub="audit-shipper-kill")
    sent = send_concurrently(stack, token, workers=4, per_worker=100, entry="cp")
    assert {s.status for s in sent} == {200, 401}
    ids = [s.correlation_id for s in sent]
    with _ship_state_locked(audit_db):
        restart_shipper(stack)
        _until(lambda: _shipper_waiting_on_the_lock(audit_db), "the shipper inside its batch")
        kill_shipper(stack)  # rows inserted, offsets not: the transaction dies with it
    assert rows_by_correlation(audit_db.reader_dsn, ids) == {}, "nothing half-written"
    restart_shipper(stack)
    hops = {s.correlation_id: 2 if s.status == 200 else 1 for s in sent}

    def arrived(rows: list[Any]) -> bool:
        return (
            bool(rows) and len(rows) == hops[rows[0]["correlation_id"]] and all(map(complete, rows))
        )

    found = wait_for_rows(audit_db.reader_dsn, ids, arrived)
    for request in sent:
        rows = found[request.correlation_id]
        assert len(rows) == (2 if request.status == 200 else 1), rows
        assert all(map(complete, rows)), rows
    request_ids = [r["request_id"] for rows in found.values() for r in rows]
    assert len(request_ids) == len(set(request_ids))
    _clean(audit_db)


class _SilentServer:
    """A TCP server that accepts and never answers (a Redis that hangs), bounded to the test."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                self._held.append(self._socket.accept()[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for held in self._held:
            held.close()
        self._socket.close()


def _gone_after(port: int, token: str, correlation_id: str, seconds: float) -> None:
    """A client that sends its request and goes away before the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"GET /api/v1/orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
            f"x-correlation-id: {correlation_id}\r\n\r\n".encode()
        )
        time.sleep(seconds)  # the behaviour under test: a client that waits, then goes away


def test_checks_that_stall_are_journaled_when_cancelled_and_when_timed_out(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]],
    audit_db: AuditDatabase,
) -> None:
    """The budget stage waits on a Redis that never answers. A client that goes away makes
    Envoy cancel the check: journaled as cancelled, with who and where. A client that waits
    gets the service's 503 just before Envoy's deadline: journaled as an error, with who."""
    stack_options, _ = gateway_stack_types
    redis = _SilentServer()
    try:
        env = audit_db.authz_env(
            AUTHZ_REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
            AUTHZ_REDIS_TIMEOUT_SECONDS="30",
            AUTHZ_BUDGET_LEASE_MAX_UNITS="0",
        )
        stack = gateway_stack_factory(stack_options(
            authz_env=env, shipper_env=audit_db.shipper_env(), entry_points=("plant",),
            authz_timeout_ms=3000,
        ))  # fmt: skip
        token = stack.sign_token(sub="audit-stall", customer_id="cust-stall")
        gone, waited = str(uuid.uuid4()), str(uuid.uuid4())
        _gone_after(stack.port("plant"), token, gone, 0.5)
        reply = stack.request("plant", "GET", "/api/v1/orders", token=token,
                              headers={"x-correlation-id": waited})  # fmt: skip
        assert reply.status == 503
        found = wait_for_rows(audit_db.reader_dsn, [gone, waited],
                              lambda rows: len(rows) == 1 and complete(rows[0]))  # fmt: skip
    finally:
        redis.close()
    (cancelled,) = found[gone]
    assert (cancelled["decision"], cancelled["denied_stage"], cancelled["problem_type"]) == (
        "cancelled", "budget", "check_cancelled",
    )  # fmt: skip
    assert (cancelled["user_id"], cancelled["customer_id"]) == ("audit-stall", "cust-stall")
    assert (cancelled["authz_status_code"], cancelled["status_code"]) == (None, 0)
    (timed_out,) = found[waited]
    assert (timed_out["decision"], timed_out["problem_type"]) == ("error", "dependency_unavailable")
    assert timed_out["user_id"] == "audit-stall"
    assert (timed_out["authz_status_code"], timed_out["status_code"]) == (503, 503)
