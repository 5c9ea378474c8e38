"""One-time PostgreSQL provisioning, as the superuser: roles, the database, pg_cron, retention.

Everything else runs as its own login afterwards: migrations as the migrations login (owner
of the database), the shipper, retention and the readers as members of their group roles, the
reference backend with nothing but CONNECT. Only the logins and the group roles may connect.

    python -m devstack provision --superuser-dsn postgresql://postgres:...@host/postgres \\
        --database gateway --passwords-file logins.json      # make up: generated, kept there
    python -m devstack provision --database gateway --passwords-from-env
        # compose, a deployment's job: PROVISION_SUPERUSER_DSN and MIGRATOR_DB_PASSWORD,
        # SHIPPER_DB_PASSWORD, RETENTION_DB_PASSWORD, READER_DB_PASSWORD, BACKEND_DB_PASSWORD

Idempotent: roles and the database are created when missing, passwords are (re)set, objects
an earlier superuser-run migration left owned by the superuser are handed to the migrations
login, and the retention job is scheduled once (as the retention login).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

# group roles of the migrations (0004, 0008), created here because a non-superuser cannot
# create a BYPASSRLS role; attributes as the migrations expect them
GROUP_ROLES: dict[str, str] = {
    "gateway_audit_admin": "", "gateway_audit_user": "", "gateway_audit_customer_admin": "",
    "gateway_audit_writer": "", "gateway_audit_maintainer": "BYPASSRLS",
    "gateway_audit_shipper": "", "gateway_audit_retention": "",
}  # fmt: skip
SESSION_PARAMETERS = ("app.user_id", "app.customer_id")  # set per database by migration 0004
RETENTION_JOB = "gateway-audit-retention"
RETENTION_SCHEDULE = "17 3 * * *"
RETENTION_COMMAND = "SELECT public.gateway_audit_delete_expired(90)"


@dataclass(frozen=True)
class Logins:
    """The login roles, by duty; each but the migrator is a member of one group role."""

    migrator: str = "gateway_migrator"
    shipper: str = "gateway_shipper"
    retention: str = "gateway_retention"
    reader: str = "gateway_reader"
    backend: str = "gateway_backend"  # the reference backend: its /health runs SELECT 1

    def groups(self) -> dict[str, str | None]:
        """login -> its group role (the migrator owns the database instead)."""
        return {
            self.migrator: None,
            self.shipper: "gateway_audit_shipper",
            self.retention: "gateway_audit_retention",
            self.reader: "gateway_audit_admin",
            self.backend: None,
        }

    def by_duty(self) -> dict[str, str]:
        """duty -> login: migrator, shipper, retention, reader, backend."""
        return {duty: str(getattr(self, duty)) for duty in self.__dataclass_fields__}


@dataclass(frozen=True)
class Provisioned:
    """Where the database is and how each login connects to it."""

    host: str
    port: int
    database: str
    logins: Logins
    passwords: Mapping[str, str]

    def dsn(self, login: str) -> str:
        secret = quote(self.passwords[login], safe="")
        return f"postgresql://{login}:{secret}@{self.host}:{self.port}/{self.database}"

    @property
    def migrator_dsn(self) -> str:
        return self.dsn(self.logins.migrator)

    @property
    def shipper_dsn(self) -> str:
        return self.dsn(self.logins.shipper)

    @property
    def retention_dsn(self) -> str:
        return self.dsn(self.logins.retention)

    @property
    def reader_dsn(self) -> str:
        return self.dsn(self.logins.reader)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _roles(conn: psycopg.Connection, logins: Logins, passwords: Mapping[str, str]) -> None:
    for name, attributes in GROUP_ROLES.items():
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN " + attributes).format(_ident(name)))
    for login, group in logins.groups().items():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            _ident(login), sql.Literal(passwords[login])))  # fmt: skip
        if group is not None:
            conn.execute(sql.SQL("GRANT {} TO {}").format(_ident(group), _ident(login)))
    # the migrations hand functions to the maintainer role (ALTER ... OWNER needs membership)
    # and set the session parameters the read policies use for their database
    migrator = _ident(logins.migrator)
    conn.execute(sql.SQL("GRANT gateway_audit_maintainer TO {}").format(migrator))
    for parameter in SESSION_PARAMETERS:
        conn.execute(sql.SQL("GRANT SET ON PARAMETER {} TO {}").format(
            sql.SQL(parameter), migrator))  # fmt: skip


def _database(conn: psycopg.Connection, database: str, logins: Logins) -> None:
    """The database, owned by the migrations login; only the gateway's roles may connect."""
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    verb = "ALTER DATABASE {} OWNER TO {}" if exists else "CREATE DATABASE {} OWNER {}"
    conn.execute(sql.SQL(verb).format(_ident(database), _ident(logins.migrator)))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(database)))
    allowed = sql.SQL(", ").join(map(_ident, [*logins.groups(), *GROUP_ROLES]))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_ident(database), allowed))
    # the shipper stages each batch in a temporary table (PUBLIC had TEMPORARY too)
    conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO gateway_audit_shipper").format(
        _ident(database)))  # fmt: skip


def _adopt(conn: psycopg.Connection, superuser: str, migrator: str) -> None:
    """Objects an earlier, superuser-run migration created now belong to the migrations login."""
    rows = conn.execute(
        """SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END,
                  c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')
             AND pg_get_userbyid(c.relowner) = %s
             AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))""",
        (superuser,),
    ).fetchall()
    for kind, name in rows:
        conn.execute(sql.SQL("ALTER " + kind + " {} OWNER TO {}").format(
            _ident(name), _ident(migrator)))  # fmt: skip


def _pg_cron(conn: psycopg.Connection, database: str, logins: Logins) -> bool:
    """pg_cron in its database (cron.database_name), and the retention job as retention."""
    if not _preloaded(conn) or conn.execute("SHOW cron.database_name").fetchone() != (database,):
        return False
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    # the migrations (0005, 0008) manage their own job; retention reads whether it has one
    for login in (logins.migrator, logins.retention):
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(_ident(login)))
    # an older install's job (0005 run as the superuser or the migrations login): retention
    # runs as its own login only
    conn.execute(
        "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s AND username <> %s",
        (RETENTION_JOB, logins.retention),
    )
    scheduled = conn.execute(
        "SELECT 1 FROM cron.job WHERE jobname = %s AND username = %s",
        (RETENTION_JOB, logins.retention),
    ).fetchone()
    if scheduled is None:
        conn.execute(
            "SELECT cron.schedule_in_database(%s, %s, %s, %s, %s)",
            (RETENTION_JOB, RETENTION_SCHEDULE, RETENTION_COMMAND, database, logins.retention),
        )
    return True


def _preloaded(conn: psycopg.Connection) -> bool:
    row = conn.execute("SHOW shared_preload_libraries").fetchone()
    return row is not None and "pg_cron" in str(row[0])


def provision(
    superuser_dsn: str,
    database: str,
    logins: Logins = Logins(),
    passwords: Mapping[str, str] | None = None,
) -> Provisioned:
    """Create or update everything; returns how each login connects (passwords generated
    for the logins `passwords` does not name)."""
    chosen = {login: (passwords or {}).get(login) or secrets.token_urlsafe(18)
              for login in logins.groups()}  # fmt: skip
    info = psycopg.conninfo.conninfo_to_dict(superuser_dsn)
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()
        assert superuser is not None
        _roles(conn, logins, chosen)
        _database(conn, database, logins)
    target = psycopg.conninfo.make_conninfo(superuser_dsn, dbname=database)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO gateway_audit_maintainer")
        _adopt(conn, str(superuser[0]), logins.migrator)
        _pg_cron(conn, database, logins)
    return Provisioned(
        host=str(info.get("host") or "127.0.0.1"),
        port=int(info.get("port") or 5432),
        database=database,
        logins=logins,
        passwords=chosen,
    )


def password_variable(duty: str) -> str:
    """The environment variable of a duty's password: MIGRATOR_DB_PASSWORD, ..."""
    return f"{duty.upper()}_DB_PASSWORD"


def passwords_from_env(logins: Logins, environ: Mapping[str, str]) -> dict[str, str]:
    """login -> password from <DUTY>_DB_PASSWORD; ValueError names every variable missing."""
    variables = {duty: password_variable(duty) for duty in logins.by_duty()}
    missing = [name for name in variables.values() if not environ.get(name)]
    if missing:
        raise ValueError(f"set {', '.join(missing)} (one password per login)")
    return {login: environ[variables[duty]] for duty, login in logins.by_duty().items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack provision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--superuser-dsn", default=os.environ.get("PROVISION_SUPERUSER_DSN"),
                        help="a superuser's DSN (env PROVISION_SUPERUSER_DSN)")  # fmt: skip
    parser.add_argument("--database", default="gateway")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--passwords-file", type=Path,
        help="JSON {login: password}: read when it exists, written (0600)",
    )  # fmt: skip
    source.add_argument(
        "--passwords-from-env", action="store_true",
        help="each login's password from <DUTY>_DB_PASSWORD; nothing is written",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.superuser_dsn:
        parser.error("--superuser-dsn (or PROVISION_SUPERUSER_DSN) is required")
    if args.passwords_from_env:
        try:
            known = passwords_from_env(Logins(), os.environ)
        except ValueError as error:
            parser.error(str(error))
    else:
        known = json.loads(args.passwords_file.read_text()) if args.passwords_file.exists() else {}
    done = provision(args.superuser_dsn, args.database, Logins(), known)
    if args.passwords_file is not None:
        fd = os.open(args.passwords_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(done.passwords), out, indent=2)
    print(json.dumps({"database": done.database, "logins": asdict(done.logins)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
