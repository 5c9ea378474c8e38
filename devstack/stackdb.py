"""make up's PostgreSQL: provisioned once as the superuser, migrated as the migrations login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack.model import PostgresService, ServiceUnavailable
from devstack.provision import Provisioned, provision
from devstack.stackconfig import REPO_ROOT

LOGINS_FILE = "postgres-logins.json"  # the logins' passwords, 0600 (devstack only)


def provision_database(pg: PostgresService, var_dir: Path) -> Provisioned:
    """The superuser's one step: logins (passwords kept in var/), the database, pg_cron."""
    logins_file = var_dir / LOGINS_FILE
    known = json.loads(logins_file.read_text()) if logins_file.exists() else {}
    database = provision(pg.dsn_for("postgres"), pg.database, passwords=known)
    fd = os.open(logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(dict(database.passwords), out, indent=2)
    return database


def migrate(dsn: str, var_dir: Path) -> None:
    log = var_dir / "logs" / "migrate.log"
    with log.open("ab") as out:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=REPO_ROOT, env={**os.environ, "AUTHZ_DATABASE_URL": dsn},
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise ServiceUnavailable(f"alembic upgrade head failed; log {log}")
