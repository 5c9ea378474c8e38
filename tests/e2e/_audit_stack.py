"""Helpers for the audit e2e tests: the writer's database, traffic with known ids, row lookups."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Event
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devstack import PostgresService
from tests.e2e.conftest import GatewayStack, _start_authz
from tests.integration._audit_db import login_as, migrated_database

ROW_COLUMNS = (
    "request_id, correlation_id, causation_id, gateway_type, route_id, decision, denied_stage, "
    "problem_type, authz_status_code, status_code, completed_at, user_id, customer_id"
)
WAIT_FOR_ROWS_S = 30.0  # bounded: the writer's flush, Envoy's 0.5 s log buffer, a replay
Row = dict[str, Any]


@dataclass(frozen=True)
class AuditDatabase:
    """A database migrated to head; the authz service writes as a login in the writer group."""

    admin_dsn: str  # the superuser: reads every row (RLS does not apply to it)
    writer_dsn: str  # what AUTHZ_DATABASE_URL gets, as production would configure it

    def authz_env(self, **extra: str) -> dict[str, str]:
        # the admin API's fixed default port would clash with any other stack on this machine
        return {"AUTHZ_DATABASE_URL": self.writer_dsn, "AUTHZ_ADMIN_ADDRESS": "", **extra}


def audit_database(postgres: PostgresService, prefix: str) -> AuditDatabase:
    dsn = migrated_database(postgres, prefix)
    return AuditDatabase(dsn, login_as(postgres, dsn, "gateway_audit_writer"))


@dataclass(frozen=True)
class Sent:
    """One request the test sent and what Envoy answered (status 0: no answer at all)."""

    correlation_id: str
    allowed: bool  # sent with a valid token (else without one: a 401 token_missing)
    status: int
    request_id: str

    @property
    def acknowledged(self) -> bool:
        """Envoy gave a final answer that the authz service decided (not its own 503)."""
        return 200 <= self.status < 500


def send_mixed(stack: GatewayStack, index: int, token: str, timeout: float = 10.0) -> Sent:
    """GET /api/v1/orders on PLANT with its own correlation id; every second one has no token."""
    correlation_id = str(uuid.uuid4())
    allowed = index % 2 == 0
    try:
        reply = stack.request(
            "plant",
            "GET",
            "/api/v1/orders",
            token=token if allowed else None,
            headers={"x-correlation-id": correlation_id},
            timeout=timeout,
        )
    except OSError:
        return Sent(correlation_id, allowed, 0, "")
    return Sent(correlation_id, allowed, reply.status, reply.headers.get("x-request-id", ""))


def send_concurrently(
    stack: GatewayStack,
    token: str,
    *,
    workers: int,
    per_worker: int,
    stop: Event | None = None,
    seconds: float = 30.0,
    pause: float = 0.0,
    on_sent: Callable[[Sent], None] | None = None,
) -> list[Sent]:
    """`workers` loops of at most `per_worker` requests each, until `stop` or `seconds` pass.

    `pause` seconds between two requests of a worker spread the traffic over time.
    """
    deadline = time.monotonic() + seconds

    def loop(worker: int) -> list[Sent]:
        sent: list[Sent] = []
        for i in range(per_worker):
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                break
            sent.append(send_mixed(stack, worker + i, token))
            if on_sent is not None:
                on_sent(sent[-1])
            if pause or not sent[-1].acknowledged:  # Envoy refuses at once: no spinning
                time.sleep(max(pause, 0.05))
        return sent

    with ThreadPoolExecutor(workers) as pool:
        return [s for result in pool.map(loop, range(workers)) for s in result]


def rows_by_correlation(dsn: str, correlation_ids: Iterable[str]) -> dict[str, list[Row]]:
    """Every audit row of these correlation ids, grouped by id (an id without rows is absent)."""
    ids = list(correlation_ids)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(
            f"SELECT {ROW_COLUMNS} FROM gateway_audit_logs WHERE correlation_id = ANY(%s) "
            "ORDER BY created_at, id",
            (ids,),
        ).fetchall()
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row["correlation_id"], []).append(row)
    return grouped


def wait_for_rows(
    dsn: str,
    correlation_ids: Iterable[str],
    done: Callable[[list[Row]], bool],
    timeout: float = WAIT_FOR_ROWS_S,
) -> dict[str, list[Row]]:
    """Poll until `done(rows)` holds for every id (bounded); returns the last rows seen."""
    ids = list(correlation_ids)
    deadline = time.monotonic() + timeout
    while True:
        found = rows_by_correlation(dsn, ids)
        if all(done(found.get(i, [])) for i in ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def one_completed_row(rows: list[Row]) -> bool:
    return len(rows) == 1 and rows[0]["completed_at"] is not None


def sigterm_authz(stack: GatewayStack, timeout: float = 30.0) -> int:
    """SIGTERM the authz service by its PID and wait for it to exit; returns its exit code."""
    process = stack.processes["authz"].process
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def restart_authz(stack: GatewayStack) -> None:
    """Start the authz service again with the same env (database, spool dir, ports)."""
    old = stack.processes["authz"]
    assert old.process.poll() is not None, "stop the authz service before restarting it"
    old.log_path.rename(old.log_path.with_name(f"authz-{int(time.time() * 1000)}.log"))
    _start_authz(stack)


def spooled_entries(stack: GatewayStack, kind: str = "") -> int:
    """Entries in the spool's segments (only those of `kind`, decision or completion, if set)."""
    marker = f'"k":"{kind}"'.encode() if kind else b""
    return sum(
        1
        for path in stack.spool_dir.glob("audit-*.jsonl")
        for line in path.read_bytes().splitlines()
        if marker in line
    )


def assert_rows_match_answers(found: dict[str, list[Row]], sent: Iterable[Sent]) -> None:
    """Exactly one row per request, its decision, and Envoy's answer once completed."""
    for request in sent:
        rows = found.get(request.correlation_id, [])
        assert len(rows) == 1, (request, rows)
        row = rows[0]
        assert row["request_id"] == request.request_id, (request, row)
        if request.allowed:
            assert (row["decision"], row["authz_status_code"]) == ("allow", 200), row
        else:
            assert (row["decision"], row["problem_type"]) == ("deny", "token_missing"), row
        # a row that Envoy's access log completed carries Envoy's final answer
        assert row["status_code"] in (None, request.status), (request, row)
