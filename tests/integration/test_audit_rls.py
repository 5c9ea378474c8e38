"""Roles on the real PostgreSQL: readers see their share, the shipper cannot rewrite history.

The shipper's login may insert rows and fill a half a row lacks; its attempts to change a
decision, delete, or date a row in the past each fail with a permission error.
"""

from __future__ import annotations

import psycopg
import pytest

from devstack import PostgresService
from devstack.provision import Provisioned
from tests.integration._audit_db import login_as, provisioned_database, superuser_dsn

ROWS = [  # request_id, user_id, customer_id
    ("req-a1", "alice", "acme"),
    ("req-a2", "alice", "acme"),
    ("req-b1", "bob", "acme"),
    ("req-c1", "carol", "globex"),
]


@pytest.fixture(scope="module")
def database(postgres: PostgresService) -> Provisioned:
    return provisioned_database(postgres, "rls")


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService, database: Provisioned) -> str:
    dsn = superuser_dsn(postgres, database)
    with psycopg.connect(dsn) as conn:  # the superuser bypasses RLS to seed
        for request_id, user, customer in ROWS:
            conn.execute(
                "INSERT INTO gateway_audit_logs (request_id, gateway_type, user_id, customer_id, "
                "decision) VALUES (%s, 'PLANT', %s, %s, 'allow')",
                (request_id, user, customer),
            )
    return dsn


def _visible(dsn: str, **settings: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        for key, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (f"app.{key}", value))
        rows = conn.execute("SELECT request_id FROM gateway_audit_logs").fetchall()
    return {r[0] for r in rows}


def _refused(dsn: str, statement: str) -> psycopg.errors.InsufficientPrivilege:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as no:
        conn.execute(statement)
    return no.value


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


def test_the_old_writer_role_can_do_nothing(postgres: PostgresService, audit_db: str) -> None:
    writer = login_as(postgres, audit_db, "gateway_audit_writer")
    _refused(writer, "INSERT INTO gateway_audit_logs (request_id, decision) VALUES ('w', 'deny')")
    with psycopg.connect(writer) as conn, pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute("SELECT gateway_audit_record_rows('[]'::json)")  # the 0007 upsert is gone


def _shipper_inserts(database: Provisioned, request_id: str, **values: object) -> None:
    columns = ["request_id", "gateway_type", *values]
    with psycopg.connect(database.shipper_dsn) as conn:
        conn.execute(
            f"INSERT INTO gateway_audit_logs ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})",
            (request_id, "PLANT", *values.values()),
        )


def test_the_shipper_fills_a_missing_half_and_nothing_else(
    database: Provisioned, audit_db: str
) -> None:
    _shipper_inserts(database, "s-1", decision="deny", user_id="mallory", problem_type="x")
    with psycopg.connect(database.shipper_dsn) as conn:  # Envoy's completion comes later
        filled = conn.execute(
            "UPDATE gateway_audit_logs SET status_code = 403, completed_at = now() "
            "WHERE request_id = 's-1' AND completed_at IS NULL"
        )
        assert filled.rowcount == 1
    with psycopg.connect(audit_db) as conn:
        row = conn.execute(
            "SELECT decision, user_id, status_code, created_at > now() - interval '1 minute' "
            "FROM gateway_audit_logs WHERE request_id = 's-1'"
        ).fetchone()
    assert row == ("deny", "mallory", 403, True)


def test_the_shippers_update_of_a_decision_column_is_refused(
    database: Provisioned, audit_db: str
) -> None:
    """The 0007 attack: turning a deny into an allow with a forged user."""
    _shipper_inserts(database, "s-2", decision="deny", user_id="mallory")
    refused = _refused(database.shipper_dsn, "UPDATE gateway_audit_logs SET decision = 'allow', "
                       "user_id = 'admin' WHERE request_id = 's-2'")  # fmt: skip
    assert "write-once" in str(refused)
    _refused(database.shipper_dsn, "UPDATE gateway_audit_logs SET request_id = 's-x' "
             "WHERE request_id = 's-2'")  # fmt: skip
    with psycopg.connect(audit_db) as conn:
        row = conn.execute("SELECT decision, user_id FROM gateway_audit_logs "
                           "WHERE request_id = 's-2'").fetchone()  # fmt: skip
    assert row == ("deny", "mallory")


def test_the_shipper_cannot_delete(database: Provisioned, audit_db: str) -> None:
    _shipper_inserts(database, "s-3", decision="allow")
    _refused(database.shipper_dsn, "DELETE FROM gateway_audit_logs WHERE request_id = 's-3'")
    _refused(database.shipper_dsn, "TRUNCATE gateway_audit_logs")
    with (
        psycopg.connect(database.shipper_dsn) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT gateway_audit_delete_expired(90)")


def test_the_shipper_cannot_backdate_a_row(database: Provisioned, audit_db: str) -> None:
    """Backdated, retention would delete it: the server's clock dates every row."""
    backdated = "now() - interval '1 year'"
    _refused(database.shipper_dsn, "INSERT INTO gateway_audit_logs (request_id, gateway_type, "
             f"decision, created_at) VALUES ('s-4', 'PLANT', 'deny', {backdated})")  # fmt: skip
    _shipper_inserts(database, "s-5", decision="deny")
    _refused(database.shipper_dsn, "UPDATE gateway_audit_logs SET created_at = "
             "now() - interval '1 year' WHERE request_id = 's-5'")  # fmt: skip
    with psycopg.connect(audit_db) as conn:  # even the table's owner cannot pass a date
        conn.execute("INSERT INTO gateway_audit_logs (request_id, gateway_type, created_at) "
                     "VALUES ('s-6', 'PLANT', '2000-01-01')")  # fmt: skip
        created = conn.execute(
            "SELECT created_at > now() - interval '1 minute' FROM gateway_audit_logs "
            "WHERE request_id = 's-6'"
        ).fetchone()
    assert created == (True,)


def test_readers_cannot_run_retention(postgres: PostgresService, audit_db: str) -> None:
    for role in ("gateway_audit_admin", "gateway_audit_user", "gateway_audit_customer_admin"):
        _refused(login_as(postgres, audit_db, role), "SELECT gateway_audit_delete_expired(90)")
