"""Helpers for the audit integration tests: migrated scratch databases and role-bound logins."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
from alembic import command
from alembic.config import Config

from devstack import PostgresService

REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIT_ROLES = (
    "gateway_audit_admin",
    "gateway_audit_user",
    "gateway_audit_customer_admin",
    "gateway_audit_writer",
)


def alembic(database_url: str, action: str, target: str) -> None:
    """`alembic upgrade|downgrade <target>` in-process against `database_url`."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    getattr(command, action)(config, target)


def create_database(postgres: PostgresService, prefix: str) -> str:
    """A new empty database on the session's server; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.dsn_for(name)


def migrated_database(postgres: PostgresService, prefix: str) -> str:
    dsn = create_database(postgres, prefix)
    alembic(dsn, "upgrade", "head")
    return dsn


def login_as(postgres: PostgresService, dsn: str, role: str) -> str:
    """A LOGIN user that is a member of `role`; returns a DSN for it to `dsn`'s database."""
    user = f"t_{role.removeprefix('gateway_audit_')}_{uuid.uuid4().hex[:6]}"
    password = uuid.uuid4().hex
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {role}")
    database = dsn.rsplit("/", 1)[1]
    return f"postgresql://{user}:{quote(password)}@{postgres.host}:{postgres.port}/{database}"
