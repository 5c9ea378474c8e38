"""Through the real Envoys, journal and shipper: one audit row per request per hop, both halves."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import uuid
from functools import partial
from pathlib import Path

import psycopg
import pytest

from authz_service.audit.verify import verify
from devstack import PostgresService
from tests.e2e._audit_stack import (
    WAIT_FOR_ROWS_S,
    AuditDatabase,
    Row,
    audit_database,
    audited_stack_options,
    complete,
    one_complete_row,
    rows_by_correlation,
    wait_for_rows,
)
from tests.e2e._gateway_stack import GatewayStack, StackOptions, send
from tests.support.waiting import eventually

CLIENT = "127.0.0.2"  # a client address of its own: the hops connect from 127.0.0.1


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_trail")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]], audit_db: AuditDatabase
) -> StackOptions:
    # a small rotation size: the access logs rotate many times during the module
    return audited_stack_options(
        gateway_stack_types,
        audit_db,
        AUTHZ_SHIPPER_HOLD_SECONDS="5",
        AUTHZ_SHIPPER_ACCESS_LOG_ROTATE_BYTES="4096",
    )


def _only_row(audit_db: AuditDatabase, correlation_id: str) -> Row:
    found = wait_for_rows(audit_db.reader_dsn, [correlation_id], one_complete_row)
    rows = found.get(correlation_id, [])
    assert len(rows) == 1, rows
    assert complete(rows[0]), rows[0]
    return rows[0]


def test_allowed_request_has_one_row_with_the_backends_status(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(sub="audit-allow", customer_id="cust-audit")
    reply = gateway_stack.request(
        "plant", "GET", "/api/v1/orders", token=token, headers={"x-correlation-id": mine}
    )
    assert reply.status == 200
    row = _only_row(audit_db, mine)
    assert row["request_id"] == reply.headers["x-request-id"]
    assert (row["decision"], row["authz_status_code"], row["status_code"]) == ("allow", 200, 200)
    assert (row["gateway_type"], row["route_id"], row["method"]) == ("PLANT", "orders-list", "GET")
    assert (row["user_id"], row["customer_id"]) == ("audit-allow", "cust-audit")
    assert (row["causation_id"], row["denied_stage"]) == (None, None)
    assert (row["response_code_details"], row["authz_consulted"]) == ("via_upstream", True)
    assert row["journal_id"], "the decision is chained"
    assert row["access_log_id"], "so is Envoy's completion"


def test_denied_request_has_one_deny_row(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    mine = str(uuid.uuid4())
    reply = gateway_stack.request(
        "plant", "GET", "/api/v1/orders", headers={"x-correlation-id": mine}
    )
    assert reply.status == 401
    row = _only_row(audit_db, mine)
    assert row["request_id"] == reply.headers["x-request-id"]
    assert (row["decision"], row["denied_stage"], row["problem_type"]) == (
        "deny",
        "authenticate",
        "token_missing",
    )
    assert (row["authz_status_code"], row["status_code"]) == (401, 401)
    assert row["response_code_details"] == "ext_authz_denied"
    assert row["user_id"] is None


def test_allowed_request_failing_upstream_keeps_both_statuses(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    """authz allowed it (200) but Envoy answered 504: the row says both."""
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(roles=("viewer",))
    reply = gateway_stack.request(
        "plant", "GET", "/api/v1/slow?ms=3000", token=token, headers={"x-correlation-id": mine}
    )
    assert reply.status == 504
    row = _only_row(audit_db, mine)
    assert (row["decision"], row["authz_status_code"], row["status_code"]) == ("allow", 200, 504)
    assert row["route_id"] == "slow"
    assert row["path"] == "/api/v1/slow", "the path without its query, as the decision has it"


def test_request_through_cp_has_one_row_per_hop_linked_by_causation(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(sub="audit-cp", roles=("customer",))
    reply = gateway_stack.request(
        "cp", "GET", "/api/v1/orders", token=token, headers={"x-correlation-id": mine}
    )
    assert reply.status == 200
    cp_request_id = reply.headers["x-request-id"]
    found = wait_for_rows(
        audit_db.reader_dsn, [mine], lambda rows: len(rows) >= 2 and all(map(complete, rows))
    )
    rows = {row["gateway_type"]: row for row in found.get(mine, [])}
    assert len(found.get(mine, [])) == 2, found
    assert set(rows) == {"CP", "PLANT"}
    cp, plant = rows["CP"], rows["PLANT"]
    assert cp["request_id"] == cp_request_id
    assert cp["causation_id"] is None
    assert plant["causation_id"] == cp_request_id
    assert plant["request_id"] != cp_request_id
    for row in (cp, plant):
        assert (row["decision"], row["authz_status_code"], row["status_code"]) == (
            "allow",
            200,
            200,
        )
        assert row["user_id"] == "audit-cp"


def test_each_hops_row_records_the_clients_address_not_the_hops(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    """PLANT's internal listener trusts the one x-forwarded-for entry CP appended: the client
    (127.0.0.2 here) is in PLANT's row, in both halves, not CP's own address (127.0.0.1)."""
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(sub="audit-xff", roles=("customer",))
    connection = http.client.HTTPConnection(
        "127.0.0.1", gateway_stack.port("cp"), timeout=10, source_address=(CLIENT, 0)
    )
    try:
        connection.request("GET", "/api/v1/orders", headers={
            "authorization": f"Bearer {token}", "x-correlation-id": mine,
            "x-forwarded-for": "203.0.113.66",  # a client's claim: trusted by no listener
        })  # fmt: skip
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    found = wait_for_rows(
        audit_db.reader_dsn, [mine], lambda rows: len(rows) == 2 and all(map(complete, rows))
    )
    with psycopg.connect(audit_db.reader_dsn) as conn:
        rows = conn.execute(
            "SELECT gateway_type, host(client_ip), decision_differs, completion_differs "
            "FROM gateway_audit_logs WHERE correlation_id = %s ORDER BY gateway_type",
            (mine,),
        ).fetchall()
    assert len(found[mine]) == 2
    assert rows == [("CP", CLIENT, None, None), ("PLANT", CLIENT, None, None)]


def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side checks); (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("case", "status", "path"),
    [("no route", 404, "/nowhere"), ("escaped slash", 400, "/api%2Forders"),
     ("headers too large", 431, "/api/v1/orders")],
)  # fmt: skip
def test_envoys_own_refusals_have_a_row_with_the_id_the_client_saw(
    gateway_stack: GatewayStack, audit_db: AuditDatabase, case: str, status: int, path: str
) -> None:
    """Answered by Envoy before (or without) the authz service: its access log has the row,
    and the problem+json body's correlation id is the one the row carries."""
    huge = "x" * (70 * 1024) if case == "headers too large" else "1"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: gw\r\nx-correlation-id: not-a-uuid\r\n"
        f"x-big: {huge}\r\nConnection: close\r\n\r\n"
    ).encode()
    got, body = _raw(gateway_stack.port("plant"), request)
    assert got == status
    problem = json.loads(body)
    correlation = problem["correlation_id"]
    assert correlation, "Envoy generated one"
    assert correlation != "not-a-uuid", "an unchecked client id is not kept"
    found = wait_for_rows(audit_db.reader_dsn, [correlation], lambda rows: len(rows) == 1)
    (row,) = found[correlation]
    assert (row["gateway_type"], row["status_code"], row["decision"]) == ("PLANT", status, None)
    assert row["authz_consulted"] is False
    assert row["request_id"] == problem["request_id"]
    if case == "no route":
        assert (row["route_id"], row["path"], row["method"]) == ("no-route", "/nowhere", "GET")


def test_readiness_probes_leave_no_row(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    marker = str(uuid.uuid4())
    assert send(gateway_stack.port("plant"), "GET", "/ready",
                headers={"x-correlation-id": marker}).status == 200  # fmt: skip
    probe = str(uuid.uuid4())  # a request after it: once its row is in, the probe's would be
    assert gateway_stack.request("plant", "GET", "/nowhere",
                                 headers={"x-correlation-id": probe}).status == 404  # fmt: skip
    wait_for_rows(audit_db.reader_dsn, [probe], lambda rows: len(rows) == 1)
    assert rows_by_correlation(audit_db.reader_dsn, [marker]) == {}


def test_no_second_row_appears_later(gateway_stack: GatewayStack, audit_db: AuditDatabase) -> None:
    """Decision and completion land in the same row whatever order they arrive in."""
    token = gateway_stack.sign_token()
    ids = [str(uuid.uuid4()) for _ in range(20)]
    for index, mine in enumerate(ids):
        reply = gateway_stack.request(
            "plant",
            "GET",
            "/api/v1/orders",
            token=token if index % 2 else None,
            headers={"x-correlation-id": mine},
        )
        assert reply.status == (200 if index % 2 else 401)
    found = wait_for_rows(audit_db.reader_dsn, ids, one_complete_row)
    assert all(one_complete_row(found.get(i, [])) for i in ids), found
    # a later request's complete row: Envoy's log and the journal are shipped past all of them
    marker = str(uuid.uuid4())
    reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token,
                                  headers={"x-correlation-id": marker})  # fmt: skip
    assert reply.status == 200
    latest = wait_for_rows(audit_db.reader_dsn, [marker], one_complete_row)
    assert one_complete_row(latest.get(marker, [])), latest
    again = rows_by_correlation(audit_db.reader_dsn, ids)
    assert {i: len(rows) for i, rows in again.items()} == dict.fromkeys(ids, 1)


def _generation(audit_db: AuditDatabase, log: Path) -> int:
    """The access log's committed generation (1: never rotated yet)."""
    with psycopg.connect(audit_db.reader_dsn) as conn:
        state = conn.execute(
            "SELECT segment FROM gateway_audit_ship_state "
            "WHERE source_kind = 'access_log' AND source_id LIKE %s",
            (f"%:{log}",),
        ).fetchone()
    return int(state[0]) if state else 1


def _rotated_past(audit_db: AuditDatabase, log: Path, generation: int) -> bool:
    return _generation(audit_db, log) > generation


def test_access_logs_rotate_without_losing_a_line(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    """The shipper renames a log it shipped past 4 KiB and asks Envoy to reopen it (POST
    /reopen_logs); the old file is read to its end and removed: every request still has its
    row, the chain unbroken. Each burst writes more than the rotation size, so each one
    rotates the log at least once, however the shipper's rounds fall."""
    token = gateway_stack.sign_token()
    live = gateway_stack.access_log_dir / "plant.log"
    generation = _generation(audit_db, live)
    for _burst in range(3):
        ids = [str(uuid.uuid4()) for _ in range(12)]  # about 1 KB of access log each
        for mine in ids:
            reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token,
                                          headers={"x-correlation-id": mine})  # fmt: skip
            assert reply.status == 200
        found = wait_for_rows(audit_db.reader_dsn, ids, one_complete_row)
        assert all(one_complete_row(found.get(i, [])) for i in ids), found
        eventually(partial(_rotated_past, audit_db, live, generation), WAIT_FOR_ROWS_S,
                   what="the log rotated and reopened", ignore=())  # fmt: skip
        generation = _generation(audit_db, live)
        assert live.exists(), "the next generation is Envoy's reopened file"
    left = sorted(p.name for p in gateway_stack.access_log_dir.glob("plant.log.*"))
    assert len(left) <= 1, f"rotated files are removed once shipped: {left}"
    report = asyncio.run(verify(audit_db.reader_dsn))
    assert report.findings == []
