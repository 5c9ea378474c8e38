"""compose's one-time database provisioning: after it, every component works without superuser.

compose/postgres-init/10-gateway-roles.sh runs once as the superuser when the postgres
container initialises its data directory. These tests run that same script against a fresh
server, then the whole migration chain as gateway_migrator (no superuser), the audit writer
as gateway_authz and the backend's probe as gateway_backend, as the compose stack does.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from authz_service.audit.record import AuditRecord
from authz_service.audit.spool import Spool
from authz_service.audit.writer import AuditWriter
from devstack import PostgresService, provision_postgres
from devstack.programs import find_program
from tests.integration._audit_db import REPO_ROOT, alembic
from tests.integration.test_migrations import _assert_head_schema

INIT_SCRIPT = REPO_ROOT / "compose" / "postgres-init" / "10-gateway-roles.sh"
LOGINS = ("gateway_migrator", "gateway_authz", "gateway_backend")


def _dsn(pg: PostgresService, user: str, password: str) -> str:
    return f"postgresql://{user}:{quote(password, safe='')}@{pg.host}:{pg.port}/{pg.database}"


def run_init_script(pg: PostgresService, passwords: dict[str, str]) -> None:
    """The script as the image's entrypoint runs it: psql as POSTGRES_USER into POSTGRES_DB."""
    psql_dir = find_program("psql").parent
    env = {
        "PATH": f"{psql_dir}{os.pathsep}{os.environ['PATH']}",
        "PGHOST": pg.host,
        "PGPORT": str(pg.port),
        "PGPASSWORD": pg.password,
        "POSTGRES_USER": pg.user,
        "POSTGRES_DB": pg.database,
        "MIGRATOR_DB_PASSWORD": passwords["gateway_migrator"],
        "AUTHZ_DB_PASSWORD": passwords["gateway_authz"],
        "BACKEND_DB_PASSWORD": passwords["gateway_backend"],
    }
    result = subprocess.run(
        ["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def provisioned(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PostgresService, dict[str, str]]]:
    """A server of its own (the roles are cluster-wide), provisioned and migrated."""
    workdir = tmp_path_factory.mktemp("compose-roles")
    with provision_postgres(workdir, fsync=False) as pg:
        passwords = {login: uuid.uuid4().hex for login in LOGINS}
        run_init_script(pg, passwords)
        alembic(_dsn(pg, "gateway_migrator", passwords["gateway_migrator"]), "upgrade", "head")
        dsns = {login: _dsn(pg, login, passwords[login]) for login in LOGINS}
        yield pg, dsns


def test_the_chain_runs_as_the_migrator_without_superuser(
    provisioned: tuple[PostgresService, dict[str, str]],
) -> None:
    pg, dsns = provisioned
    with psycopg.connect(dsns["gateway_migrator"]) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False)
    with psycopg.connect(pg.dsn) as conn:  # the superuser's view of what the chain made
        _assert_head_schema(conn)


async def test_authz_writes_audit_rows_as_gateway_authz(
    provisioned: tuple[PostgresService, dict[str, str]], tmp_path: Path
) -> None:
    pg, dsns = provisioned
    request_id = f"compose-{uuid.uuid4().hex}"
    writer = AuditWriter(dsns["gateway_authz"], tmp_path, batch_size=10, flush_interval=0.05,
                         retention_interval=None)  # fmt: skip
    await writer.start()
    writer.submit(AuditRecord(request_id, datetime.now(UTC), "allow", 200))
    await writer.stop()
    assert Spool(tmp_path, 1 << 20).empty, "the batch was refused and spooled"
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute(
            "SELECT decision, authz_status_code FROM gateway_audit_logs WHERE request_id = %s",
            (request_id,),
        ).fetchone()
    assert row == ("allow", 200)


@pytest.mark.parametrize(
    ("login", "statement"),
    [
        ("gateway_authz", "SELECT count(*) FROM gateway_audit_logs"),
        ("gateway_authz", "DELETE FROM gateway_audit_logs"),
        ("gateway_authz", "CREATE TABLE intruder (n int)"),
        ("gateway_backend", "SELECT count(*) FROM gateway_audit_logs"),
        ("gateway_backend", "SELECT count(*) FROM plans"),
        ("gateway_backend", "CREATE TABLE intruder (n int)"),
    ],
)
def test_components_cannot_exceed_their_role(
    provisioned: tuple[PostgresService, dict[str, str]], login: str, statement: str
) -> None:
    _pg, dsns = provisioned
    with psycopg.connect(dsns[login]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the backend's /health query
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_a_login_without_a_grant_cannot_connect(
    provisioned: tuple[PostgresService, dict[str, str]],
) -> None:
    pg, _dsns = provisioned
    password = uuid.uuid4().hex
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE stranger LOGIN PASSWORD '{password}'")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_dsn(pg, "stranger", password), connect_timeout=5).close()
