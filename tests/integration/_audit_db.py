"""Helpers for the audit integration tests: provisioned databases, role logins, migrations."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
from alembic import command
from alembic.config import Config

from devstack import PostgresService
from devstack.provision import Logins, Provisioned, provision

REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIT_ROLES = (
    "gateway_audit_admin",
    "gateway_audit_user",
    "gateway_audit_customer_admin",
    "gateway_audit_writer",
    "gateway_audit_shipper",
    "gateway_audit_retention",
)


def alembic(database_url: str, action: str, target: str) -> None:
    """`alembic upgrade|downgrade <target>` in-process against `database_url`."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    getattr(command, action)(config, target)


def create_database(postgres: PostgresService, prefix: str) -> str:
    """A new empty database on the session's server, owned by the superuser; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.dsn_for(name)


def provisioned_database(postgres: PostgresService, prefix: str) -> Provisioned:
    """A new database provisioned as `make up` does it (its own logins), migrated to head as
    the migrations login: nothing but provisioning runs as the superuser."""
    tag = f"{prefix}_{uuid.uuid4().hex[:8]}"
    logins = Logins(migrator=f"{tag}_migrator", shipper=f"{tag}_shipper",
                    retention=f"{tag}_retention", reader=f"{tag}_reader")  # fmt: skip
    done = provision(postgres.dsn_for("postgres"), tag, logins)
    alembic(done.migrator_dsn, "upgrade", "head")
    return done


def superuser_dsn(postgres: PostgresService, database: Provisioned) -> str:
    """The superuser on a provisioned database: for seeding and tampering, as an attacker."""
    return postgres.dsn_for(database.database)


def migrated_database(postgres: PostgresService, prefix: str) -> str:
    """A provisioned database at head; returns the superuser's DSN to it (for seeding)."""
    return superuser_dsn(postgres, provisioned_database(postgres, prefix))


def login_as(postgres: PostgresService, dsn: str, role: str) -> str:
    """A LOGIN user that is a member of `role`; returns a DSN for it to `dsn`'s database."""
    user = f"t_{role.removeprefix('gateway_audit_')}_{uuid.uuid4().hex[:6]}"
    password = uuid.uuid4().hex
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {role}")
    database = dsn.rsplit("/", 1)[1]
    return f"postgresql://{user}:{quote(password)}@{postgres.host}:{postgres.port}/{database}"
