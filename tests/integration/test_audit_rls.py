"""Row-level security: each audit role, connected for real, sees and changes only its share."""

from __future__ import annotations

import psycopg
import pytest

from devstack import PostgresService
from tests.integration._audit_db import login_as, migrated_database

ROWS = [  # request_id, user_id, customer_id
    ("req-a1", "alice", "acme"),
    ("req-a2", "alice", "acme"),
    ("req-b1", "bob", "acme"),
    ("req-c1", "carol", "globex"),
]


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> str:
    dsn = migrated_database(postgres, "rls")
    with psycopg.connect(dsn) as conn:  # the superuser bypasses RLS to seed
        for request_id, user, customer in ROWS:
            conn.execute(
                "INSERT INTO gateway_audit_logs (request_id, user_id, customer_id, decision) "
                "VALUES (%s, %s, %s, 'allow')",
                (request_id, user, customer),
            )
    return dsn


def _visible(dsn: str, **settings: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        for key, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (f"app.{key}", value))
        rows = conn.execute("SELECT request_id FROM gateway_audit_logs").fetchall()
    return {r[0] for r in rows}


def _refused(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


CHANGES = (
    "UPDATE gateway_audit_logs SET decision = 'deny'",
    "DELETE FROM gateway_audit_logs",
    "TRUNCATE gateway_audit_logs",
)


def test_admin_sees_every_row_and_changes_none(postgres: PostgresService, audit_db: str) -> None:
    admin = login_as(postgres, audit_db, "gateway_audit_admin")
    assert _visible(admin) == {r[0] for r in ROWS}
    for statement in (*CHANGES, "INSERT INTO gateway_audit_logs (request_id) VALUES ('x')"):
        _refused(admin, statement)


def test_user_sees_only_their_own_rows(postgres: PostgresService, audit_db: str) -> None:
    user = login_as(postgres, audit_db, "gateway_audit_user")
    assert _visible(user, user_id="alice") == {"req-a1", "req-a2"}
    assert _visible(user, user_id="carol") == {"req-c1"}
    assert _visible(user) == set()  # no app.user_id: nothing
    assert _visible(user, user_id="") == set()
    assert _visible(user, customer_id="acme") == set()  # the customer setting is not theirs
    for statement in CHANGES:
        _refused(user, statement)


def test_customer_admin_sees_their_customers_rows(postgres: PostgresService, audit_db: str) -> None:
    customer_admin = login_as(postgres, audit_db, "gateway_audit_customer_admin")
    assert _visible(customer_admin, customer_id="acme") == {"req-a1", "req-a2", "req-b1"}
    assert _visible(customer_admin, customer_id="globex") == {"req-c1"}
    assert _visible(customer_admin) == set()
    assert _visible(customer_admin, user_id="alice") == set()
    for statement in CHANGES:
        _refused(customer_admin, statement)


def test_writer_inserts_and_nothing_else(postgres: PostgresService, audit_db: str) -> None:
    writer = login_as(postgres, audit_db, "gateway_audit_writer")
    with psycopg.connect(writer) as conn:
        conn.execute("INSERT INTO gateway_audit_logs (request_id, decision) VALUES ('w-1', 'deny')")
    _refused(writer, "SELECT request_id FROM gateway_audit_logs")
    for statement in CHANGES:
        _refused(writer, statement)
    # the upsert functions set only decision or completion columns; rows stay one per request
    with psycopg.connect(writer) as conn:
        conn.execute(
            "SELECT gateway_audit_record_completions(%s::jsonb)",
            (
                '[{"request_id": "w-1", "status_code": 403, '
                '"completed_at": "2025-01-01T00:00:00Z"}]',
            ),
        )
        conn.execute(  # 0007's batch function: a completion leaves the decision's columns be
            "SELECT gateway_audit_record_rows(%s::json)",
            (
                '[{"request_id": "w-1", "status_code": 403, "response_bytes": 9, '
                '"completed_at": "2025-01-01T00:00:02Z"}]',
            ),
        )
        conn.commit()
        # nor can the writer use the retention function to delete recent rows
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT gateway_audit_delete_expired(0)")
    with psycopg.connect(audit_db) as conn:
        row = conn.execute(
            "SELECT count(*), max(decision), max(status_code), max(response_bytes) "
            "FROM gateway_audit_logs WHERE request_id = 'w-1'"
        ).fetchone()
    assert row == (1, "deny", 403, 9)


def test_readers_cannot_call_the_writer_functions(postgres: PostgresService, audit_db: str) -> None:
    for role in ("gateway_audit_admin", "gateway_audit_user", "gateway_audit_customer_admin"):
        _refused(login_as(postgres, audit_db, role), "SELECT gateway_audit_record_decisions('[]')")
        _refused(login_as(postgres, audit_db, role), "SELECT gateway_audit_record_rows('[]')")
        _refused(login_as(postgres, audit_db, role), "SELECT gateway_audit_delete_expired(90)")
