"""Through the real Envoys: one audit row per checked request, completed with Envoy's answer."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from devstack import PostgresService
from tests.e2e._audit_stack import (
    AuditDatabase,
    Row,
    audit_database,
    one_completed_row,
    rows_by_correlation,
    wait_for_rows,
)


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_trail")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[Any], type[Any]], audit_db: AuditDatabase
) -> Any:
    stack_options, _ = gateway_stack_types
    return stack_options(authz_env=audit_db.authz_env(), entry_points=("plant", "cp"))


def _only_row(audit_db: AuditDatabase, correlation_id: str) -> Row:
    found = wait_for_rows(audit_db.admin_dsn, [correlation_id], one_completed_row)
    rows = found.get(correlation_id, [])
    assert len(rows) == 1, rows
    assert rows[0]["completed_at"] is not None, rows[0]
    return rows[0]


def test_allowed_request_has_one_row_with_the_backends_status(
    gateway_stack: Any, audit_db: AuditDatabase
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
    assert (row["gateway_type"], row["route_id"]) == ("PLANT", "orders-list")
    assert (row["user_id"], row["customer_id"]) == ("audit-allow", "cust-audit")
    assert row["causation_id"] is None
    assert row["denied_stage"] is None


def test_denied_request_has_one_deny_row(gateway_stack: Any, audit_db: AuditDatabase) -> None:
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
    assert row["user_id"] is None


def test_allowed_request_failing_upstream_keeps_both_statuses(
    gateway_stack: Any, audit_db: AuditDatabase
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


def test_request_through_cp_has_one_row_per_hop_linked_by_causation(
    gateway_stack: Any, audit_db: AuditDatabase
) -> None:
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(sub="audit-cp", roles=("customer",))
    reply = gateway_stack.request(
        "cp", "GET", "/api/v1/orders", token=token, headers={"x-correlation-id": mine}
    )
    assert reply.status == 200
    cp_request_id = reply.headers["x-request-id"]
    found = wait_for_rows(
        audit_db.admin_dsn,
        [mine],
        lambda rows: len(rows) >= 2 and all(r["completed_at"] is not None for r in rows),
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


def test_no_second_row_appears_later(gateway_stack: Any, audit_db: AuditDatabase) -> None:
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
    found = wait_for_rows(audit_db.admin_dsn, ids, one_completed_row)
    assert all(one_completed_row(found.get(i, [])) for i in ids), found
    time.sleep(1.0)  # past Envoy's 0.5 s log buffer and the writer's flush: no stray row
    again = rows_by_correlation(audit_db.admin_dsn, ids)
    assert {i: len(rows) for i, rows in again.items()} == dict.fromkeys(ids, 1)
