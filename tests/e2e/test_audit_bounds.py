"""A client stores no more in the audit trail than the gateway bounds (hostile pass 2026-11-30).

Without any credential, a client's 50 KB User-Agent was stored whole in the journal, the
access log and the row (and a 50 KB target refused with 501 in the row's path), per request,
for the retention period. Both halves now keep the first AUDIT_USER_AGENT_MAX_BYTES of the
User-Agent and at most limits.max_path_bytes of the path, and still agree (no `_differs`).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from devstack import PostgresService
from gateway_contract.access_log import AUDIT_USER_AGENT_MAX_BYTES
from tests.e2e._audit_stack import (
    AuditDatabase,
    audit_database,
    audited_stack_options,
    wait_for_rows,
)
from tests.e2e._gateway_stack import GatewayStack, StackOptions

MAX_PATH_BYTES = 4096  # config/gateway.yaml limits.max_path_bytes


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_bounds")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]], audit_db: AuditDatabase
) -> StackOptions:
    return audited_stack_options(gateway_stack_types, audit_db, AUTHZ_SHIPPER_HOLD_SECONDS="5")


def _rows(audit_db: AuditDatabase, correlation_id: str, decided: bool) -> list[dict[str, Any]]:
    def done(rows: list[Any]) -> bool:
        return (
            len(rows) == 1
            and rows[0]["completed_at"] is not None
            and (rows[0]["decision"] is not None or not decided)
        )

    wait_for_rows(audit_db.reader_dsn, [correlation_id], done)
    with psycopg.connect(audit_db.reader_dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT decision, status_code, path, user_agent, decision_differs, completion_differs "
            "FROM gateway_audit_logs WHERE correlation_id = %s",
            (correlation_id,),
        ).fetchall()


@pytest.mark.parametrize("entry", ["plant", "cp"])
def test_a_huge_user_agent_is_stored_cut_alike_in_both_halves(
    gateway_stack: GatewayStack, audit_db: AuditDatabase, entry: str
) -> None:
    mine = str(uuid.uuid4())
    agent = "probe/1 " + "U" * (50 * 1024)
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/orders", headers={"user-agent": agent, "x-correlation-id": mine}
    )
    assert reply.status == 401
    (row,) = _rows(audit_db, mine, decided=True)
    assert (row["decision"], row["status_code"]) == ("deny", 401)
    assert row["user_agent"] == agent[:AUDIT_USER_AGENT_MAX_BYTES]
    assert (row["decision_differs"], row["completion_differs"]) == (None, None)


@pytest.mark.parametrize("entry", ["plant", "cp"])
def test_a_refused_huge_target_is_stored_cut(
    gateway_stack: GatewayStack, audit_db: AuditDatabase, entry: str
) -> None:
    mine = str(uuid.uuid4())
    target = "/" + "t" * (20 * 1024)
    reply = gateway_stack.request(
        entry, "TRACE", target, headers={"user-agent": "U" * 5000, "x-correlation-id": mine}
    )
    assert reply.status == 501
    (row,) = _rows(audit_db, mine, decided=False)
    assert row["path"] == target[:MAX_PATH_BYTES]
    assert row["user_agent"] == "U" * AUDIT_USER_AGENT_MAX_BYTES
