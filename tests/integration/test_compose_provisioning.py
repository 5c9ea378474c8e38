"""compose's one-time provisioning, as compose runs it: afterwards nothing needs the superuser.

The `provision` service of compose/docker-compose.yml runs `python -m devstack provision` (the
code `make up` runs) with the passwords of compose/.env. These tests run that same command,
with the environment compose gives it, against a fresh server; then the whole migration chain
as the migrations login, and each login compose's services use does its duty and no more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
import yaml

from devstack import PostgresService, provision_postgres
from devstack.provision import Logins, password_variable
from tests.integration._audit_db import REPO_ROOT, alembic
from tests.integration.test_migrations import _assert_head_schema

COMPOSE = yaml.safe_load((REPO_ROOT / "compose" / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
LOGINS = Logins()
# compose service -> the database login its URL names (the shipper has two: its own, retention)
SERVICE_LOGINS = {"migrate": [LOGINS.migrator], "shipper": [LOGINS.shipper, LOGINS.retention],
                  "backend": [LOGINS.backend]}  # fmt: skip


def _logins(service: str) -> list[str]:
    """The user of each *DATABASE_URL of a service (the password part is a ${...} of .env)."""
    env = SERVICES[service].get("environment", {})
    urls = [value for key, value in env.items() if key.endswith("DATABASE_URL")]
    return sorted(re.findall(r"^postgresql://([^:@/]+):", url)[0] for url in urls)


def _dsn(pg: PostgresService, user: str, password: str) -> str:
    return f"postgresql://{user}:{quote(password, safe='')}@{pg.host}:{pg.port}/{pg.database}"


def run_provision_service(pg: PostgresService, passwords: dict[str, str]) -> None:
    """The provision service's command with the environment compose gives it (its host and
    the superuser's password are the test server's)."""
    command = SERVICES["provision"]["command"]
    assert command[:4] == ["python3", "-m", "devstack", "provision"]
    args = [a.replace("${POSTGRES_DB:-gateway}", pg.database) for a in command[4:]]
    env = {
        "PATH": os.environ["PATH"],
        "PROVISION_SUPERUSER_DSN": f"postgresql://{pg.user}:{quote(pg.password, safe='')}@"
        f"{pg.host}:{pg.port}/postgres",
        **{password_variable(duty): passwords[login] for duty, login in LOGINS.by_duty().items()},
    }
    assert set(env) - {"PATH"} == set(SERVICES["provision"]["environment"])
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "provision", *args], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def provisioned(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PostgresService, dict[str, str]]]:
    """A server of its own (roles are cluster-wide), provisioned as compose does, migrated."""
    workdir = tmp_path_factory.mktemp("compose-provisioning")
    with provision_postgres(workdir, fsync=False) as pg:
        passwords = {login: uuid.uuid4().hex for login in LOGINS.groups()}
        run_provision_service(pg, passwords)
        alembic(_dsn(pg, LOGINS.migrator, passwords[LOGINS.migrator]), "upgrade", "head")
        yield pg, {login: _dsn(pg, login, password) for login, password in passwords.items()}


def test_compose_services_log_in_as_the_provisioned_logins() -> None:
    for service, logins in SERVICE_LOGINS.items():
        assert _logins(service) == sorted(logins), service
    assert _logins("authz") == [], "the authz service has no database login"
    assert "provision" in SERVICES["migrate"]["depends_on"]
    mounted = [v for s in SERVICES.values() for v in s.get("volumes", [])]
    assert not [v for v in mounted if "docker-entrypoint-initdb.d" in v], "one source of roles"


def test_the_chain_runs_as_the_migrator_without_superuser(
    provisioned: tuple[PostgresService, dict[str, str]],
) -> None:
    pg, dsns = provisioned
    with psycopg.connect(dsns[LOGINS.migrator]) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False)
    with psycopg.connect(pg.dsn) as conn:  # the superuser's view of what the chain made
        _assert_head_schema(conn)
        logins = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolname = ANY(%s)",
            (list(LOGINS.groups()),),
        ).fetchall()
    assert {name for (name,) in logins} == set(LOGINS.groups())


def test_provisioning_again_keeps_every_login_working(
    provisioned: tuple[PostgresService, dict[str, str]],
) -> None:
    """compose runs it on every `up`: the second run changes nothing a login relies on."""
    pg, dsns = provisioned
    passwords = {login: urlsplit(dsn).password or "" for login, dsn in dsns.items()}
    run_provision_service(pg, passwords)
    for dsn in dsns.values():
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    ("login", "statement"),
    [
        (LOGINS.shipper, "DELETE FROM gateway_audit_logs"),
        (LOGINS.shipper, "UPDATE gateway_audit_logs SET created_at = now()"),
        (LOGINS.shipper, "CREATE TABLE intruder (n int)"),
        (LOGINS.retention, "INSERT INTO gateway_audit_logs (request_id) VALUES ('x')"),
        (LOGINS.backend, "SELECT count(*) FROM gateway_audit_logs"),
        (LOGINS.backend, "SELECT count(*) FROM plans"),
        (LOGINS.backend, "CREATE TABLE intruder (n int)"),
        (LOGINS.reader, "DELETE FROM gateway_audit_logs"),
    ],
)
def test_each_login_cannot_exceed_its_duty(
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


def test_a_missing_password_is_named_and_nothing_is_provisioned(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PROVISION_SUPERUSER_DSN": "postgresql://nobody@127.0.0.1/x"}
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "provision", "--passwords-from-env"], env=env,
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "MIGRATOR_DB_PASSWORD" in result.stderr
    assert "BACKEND_DB_PASSWORD" in result.stderr
