"""Helpers for the audit e2e tests: a provisioned database, traffic with known ids, row lookups."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Event
from typing import Any

import psycopg
from psycopg.rows import dict_row

from authz_service.audit.framing import decode_record, read_frames
from devstack import PostgresService
from devstack.provision import Provisioned
from tests.e2e._gateway_stack import GatewayStack, StackOptions, kill_part, restart_part
from tests.integration._audit_db import provisioned_database, superuser_dsn

ROW_COLUMNS = (
    "id, request_id, correlation_id, causation_id, gateway_type, route_id, method, path, "
    "decision, denied_stage, problem_type, authz_status_code, status_code, completed_at, "
    "user_id, customer_id, response_code_details, authz_consulted, journal_id, access_log_id"
)
WAIT_FOR_ROWS_S = 60.0  # bounded: Envoy's file flush, the shipper's hold and poll, a retry
Row = dict[str, Any]


@dataclass(frozen=True)
class AuditDatabase:
    """A database provisioned and migrated as `make up` does it; each part uses its login."""

    provisioned: Provisioned
    superuser: str  # for tampering, as an attacker with the superuser would

    @property
    def reader_dsn(self) -> str:
        """A gateway_audit_admin login: reads every row (row-level security)."""
        return self.provisioned.reader_dsn

    def authz_env(self, **extra: str) -> dict[str, str]:
        # the authz service needs no database at all; the admin API's fixed default port
        # would clash with any other stack on this machine
        return {"AUTHZ_ADMIN_ADDRESS": "", **extra}

    def shipper_env(self, **extra: str) -> dict[str, str]:
        """The shipper's login to this database (not the session's e2e database)."""
        return {"AUTHZ_SHIPPER_DATABASE_URL": self.provisioned.shipper_dsn, **extra}


def audit_database(postgres: PostgresService, prefix: str) -> AuditDatabase:
    provisioned = provisioned_database(postgres, prefix)
    return AuditDatabase(provisioned, superuser_dsn(postgres, provisioned))


def audited_stack_options(
    stack_types: tuple[type[StackOptions], type[GatewayStack]],
    audit_db: AuditDatabase,
    **shipper_env: str,
) -> StackOptions:
    """PLANT and CP, with the shipper writing into `audit_db` (`shipper_env`: its settings)."""
    stack_options, _ = stack_types
    return stack_options(
        authz_env=audit_db.authz_env(),
        shipper_env=audit_db.shipper_env(**shipper_env),
        entry_points=("plant", "cp"),
    )


@dataclass(frozen=True)
class Sent:
    """One request the test sent and what Envoy answered (status 0: no answer at all)."""

    correlation_id: str
    allowed: bool  # sent with a valid token (else without one: a 401 token_missing)
    status: int
    request_id: str
    entry: str = "plant"

    @property
    def answered(self) -> bool:
        return self.status != 0


def send_mixed(
    stack: GatewayStack, index: int, token: str, entry: str = "plant", timeout: float = 10.0
) -> Sent:
    """GET /api/v1/orders with its own correlation id; every second one has no token."""
    correlation_id = str(uuid.uuid4())
    allowed = index % 2 == 0
    try:
        reply = stack.request(
            entry,
            "GET",
            "/api/v1/orders",
            token=token if allowed else None,
            headers={"x-correlation-id": correlation_id},
            timeout=timeout,
        )
    except OSError:
        return Sent(correlation_id, allowed, 0, "", entry)
    return Sent(correlation_id, allowed, reply.status, reply.headers.get("x-request-id", ""), entry)


def send_concurrently(
    stack: GatewayStack,
    token: str,
    *,
    workers: int,
    per_worker: int,
    stop: Event | None = None,
    seconds: float = 30.0,
    pause: float = 0.0,
    entry: str = "plant",
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
            sent.append(send_mixed(stack, worker + i, token, entry))
            if on_sent is not None:
                on_sent(sent[-1])
            if pause or sent[-1].status in (0, 503):  # refused at once: no spinning
                time.sleep(max(pause, 0.02))  # the load's pace (behaviour), not a wait
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
        time.sleep(0.25)  # the poll interval of this wait on the rows


def complete(row: Row) -> bool:
    """Both halves are in: the decision and Envoy's completion."""
    return row["decision"] is not None and row["completed_at"] is not None


def one_complete_row(rows: list[Row]) -> bool:
    return len(rows) == 1 and complete(rows[0])


def journal_records(stack: GatewayStack, decision: str = "") -> int:
    """Records in the stack's journals not yet removed by the shipper (of `decision`, if set)."""
    count = 0
    for segment in stack.journal_dir.glob("*/*.journal"):
        for _, payload in read_frames(segment.read_bytes(), 0).payloads:
            count += not decision or decode_record(payload)["decision"] == decision
    return count


def kill_authz(stack: GatewayStack) -> None:
    """SIGKILL the authz service: no shutdown, nothing flushed but what the journal has."""
    kill_part(stack, "authz")


def restart_authz(stack: GatewayStack) -> None:
    """Start the authz service again with the same env (journal dir, ports)."""
    restart_part(stack, "authz")


def kill_shipper(stack: GatewayStack) -> None:
    kill_part(stack, "shipper")


def restart_shipper(stack: GatewayStack) -> None:
    restart_part(stack, "shipper")


def assert_one_row_per_hop(found: dict[str, list[Row]], sent: Iterable[Sent]) -> None:
    """Exactly one row per hop a request reached, with what Envoy answered the client."""
    for request in sent:
        rows = found.get(request.correlation_id, [])
        hops = {row["gateway_type"] for row in rows}
        assert len(rows) == len(hops), (request, rows)  # never two rows for one hop
        entry = {row["gateway_type"]: row for row in rows}[request.entry.upper()]
        assert entry["request_id"] == request.request_id, (request, entry)
        assert entry["status_code"] == request.status, (request, entry)
        if request.status == 200:
            assert request.allowed
            assert all(r["decision"] == "allow" and r["completed_at"] for r in rows), rows
            assert hops == {request.entry.upper(), "PLANT"}, rows
        elif request.status == 401:
            assert (entry["decision"], entry["problem_type"]) == ("deny", "token_missing"), entry
        else:  # a hop's Envoy refused while the authz service was away: its line says so
            assert request.status == 503, request
            refusing = [r for r in rows if r["response_code_details"] == "ext_authz_error"]
            assert len(refusing) == 1, rows
            assert refusing[0]["authz_consulted"] is True, rows
