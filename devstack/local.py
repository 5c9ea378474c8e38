"""The local provider: PostgreSQL, Redis, OPA and Envoy as child processes of this one."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from devstack.accounts import service_account, traversable
from devstack.free_ports import LOOPBACK, free_port
from devstack.model import (
    EnvoyService,
    OpaService,
    PostgresService,
    RedisService,
    ServiceUnavailable,
)
from devstack.probes import http_get, postgres_answers, redis_answers
from devstack.process import ManagedProcess
from devstack.programs import find_program
from gateway_config.models import Audit

GATEWAY_DB = "gateway"
# Budgets must survive a Redis restart (docs/ARCHITECTURE.md, "Budget guarantee"): an
# append-only file fsynced every second, no RDB snapshots. The containers provider and
# compose/docker-compose.yml run Redis with the same arguments.
REDIS_PERSISTENCE = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
# Envoy buffers file access logs up to this long (its default, 10 s, is what a crash of Envoy
# could lose of the audit trail's completions, and how late they reach the shipper): the
# gateway config's audit.file_flush_interval_ms, which render writes to envoy/flags
ENVOY_FILE_FLUSH_MS: int = Audit.model_fields["file_flush_interval_ms"].default


def envoy_flags(config_path: Path) -> list[str]:
    """The flags render wrote beside a bootstrap (`envoy/flags`); the defaults for a
    hand-written config (the bench's, a test's)."""
    try:
        return (config_path.parent / "flags").read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return ["--file-flush-interval-msec", str(ENVOY_FILE_FLUSH_MS)]


_PORT_TAKEN = ("address already in use", "could not bind", "address in use")


def _start_on_free_port(
    make: Callable[[int], ManagedProcess], attempts: int = 3
) -> tuple[int, ManagedProcess]:
    """Start on a port that was free; another program may take it first, so retry then."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        process = make(port)
        try:
            process.start()
        except ServiceUnavailable as error:
            if attempt == attempts or not any(m in str(error).lower() for m in _PORT_TAKEN):
                raise
            continue
        return port, process
    raise AssertionError("unreachable: the last attempt returns or raises")


def _admin_conninfo(port: int, password: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=LOOPBACK, port=port, user="postgres", password=password, dbname="postgres"
    )


def _ensure_database(port: int, password: str) -> None:
    with psycopg.connect(_admin_conninfo(port, password), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (GATEWAY_DB,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{GATEWAY_DB}"')


@contextlib.contextmanager
def postgres(workdir: Path, *, fsync: bool = True) -> Iterator[PostgresService]:
    """PostgreSQL with data in `workdir/postgres` (kept between runs) and database "gateway"."""
    server = find_program("postgres").resolve()  # the real bin dir holds initdb and lib
    initdb = server.parent / "initdb"
    if not initdb.exists():
        initdb = find_program("initdb")
    account = service_account()
    base = workdir / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    scratch: Path | None = None
    if account is not None and not traversable(base, account):
        # e.g. pytest's 0700 temp dirs: use a private dir the account can reach, removed on exit
        scratch = Path(tempfile.mkdtemp(prefix="devstack-postgres-"))
        base = scratch
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    data = base / "data"
    password_file = base / "password"
    if not (data / "PG_VERSION").exists():
        password_file.write_text(secrets.token_urlsafe(18))
        password_file.chmod(0o600)
        if account is not None:
            os.chown(password_file, account.pw_uid, account.pw_gid)
        _initdb(initdb, data, password_file, account, fsync=fsync)
    password = password_file.read_text().strip()
    pg_cron = (server.parent.parent / "lib" / "pg_cron.so").exists()
    try:
        yield from _run_postgres(server, data, password, account, fsync=fsync, pg_cron=pg_cron)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _initdb(
    initdb: Path, data: Path, password_file: Path, account: pwd.struct_passwd | None, *, fsync: bool
) -> None:
    argv = [str(initdb), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={password_file}", "-E", "UTF8", "--locale=C"]  # fmt: skip
    if not fsync:
        argv.append("--no-sync")
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        cwd="/",
    )
    if result.returncode != 0:
        raise ServiceUnavailable(f"initdb failed ({result.returncode}): {result.stderr[-2000:]}")


def _run_postgres(
    server: Path,
    data: Path,
    password: str,
    account: pwd.struct_passwd | None,
    *,
    fsync: bool,
    pg_cron: bool,
) -> Iterator[PostgresService]:
    settings = {
        "listen_addresses": LOOPBACK,
        "unix_socket_directories": "",
        "fsync": "on" if fsync else "off",
        "synchronous_commit": "on" if fsync else "off",
        "full_page_writes": "on" if fsync else "off",
        "max_connections": "200",
    }
    if pg_cron:
        # jobs run as their owner in a background worker: the retention login needs no
        # password (and no socket: this server listens on TCP only)
        settings |= {"shared_preload_libraries": "pg_cron", "cron.database_name": GATEWAY_DB,
                     "cron.use_background_workers": "on"}  # fmt: skip
    argv = [str(server), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]

    def make(port: int) -> ManagedProcess:
        return ManagedProcess(
            "postgres",
            [*argv, "-c", f"port={port}"],
            log_path=data.parent / "postgres.log",
            ready=lambda: postgres_answers(_admin_conninfo(port, password)),
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            stop_signal=signal.SIGINT,  # "fast" shutdown: no waiting for clients to leave
        )

    port, process = _start_on_free_port(make)
    try:
        _ensure_database(port, password)
        yield PostgresService(
            control=process, host=LOOPBACK, port=port, password=password, pg_cron=pg_cron
        )
    finally:
        process.stop()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisService]:
    """redis-server on a free port, its append-only file in `workdir/redis` (kept between runs).

    AOF with `appendfsync everysec` (REDIS_PERSISTENCE): the budget counters survive a
    restart; a crash loses at most about the last second of consumption.
    """
    program = find_program("redis-server")
    home = workdir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    argv = [str(program), "--bind", LOOPBACK, *REDIS_PERSISTENCE,
            "--dir", str(home), "--daemonize", "no"]  # fmt: skip

    def make(port: int) -> ManagedProcess:
        return ManagedProcess(
            "redis-server",
            [*argv, "--port", str(port)],
            log_path=home / "redis.log",
            ready=lambda: redis_answers(LOOPBACK, port),
        )

    port, process = _start_on_free_port(make)
    try:
        yield RedisService(control=process, host=LOOPBACK, port=port)
    finally:
        process.stop()


@contextlib.contextmanager
def opa(workdir: Path, policy_dir: Path | None) -> Iterator[OpaService]:
    """`opa run --server` on a free port, loading `policy_dir` when given."""
    program = find_program("opa")
    home = workdir / "opa"
    home.mkdir(parents=True, exist_ok=True)
    policies = [] if policy_dir is None else [str(policy_dir)]

    def make(port: int) -> ManagedProcess:
        return ManagedProcess(
            "opa",
            [str(program), "run", "--server", "--addr", f"{LOOPBACK}:{port}",
             "--skip-version-check", "--log-level", "error", *policies],
            log_path=home / "opa.log",
            ready=lambda: http_get(f"http://{LOOPBACK}:{port}/health")[0] == 200,
        )  # fmt: skip

    port, process = _start_on_free_port(make)
    try:
        yield OpaService(control=process, host=LOOPBACK, port=port)
    finally:
        process.stop()


def _admin_url(address_file: Path) -> str | None:
    try:
        address = address_file.read_text().strip()
    except OSError:
        return None
    return f"http://{address}" if address else None


def _envoy_ready(address_file: Path) -> bool:
    url = _admin_url(address_file)
    if url is None:
        return False
    status, body = http_get(f"{url}/ready")
    return status == 200 and body.strip() == "LIVE"


@contextlib.contextmanager
def envoy(
    workdir: Path,
    config_path: Path,
    *,
    name: str,
    concurrency: int = 1,
) -> Iterator[EnvoyService]:
    """Envoy with `config_path` (its listeners' ports come from the config)."""
    program = find_program("envoy")
    home = workdir / "envoy"
    home.mkdir(parents=True, exist_ok=True)
    address_file = home / f"{name}.admin-address"
    address_file.unlink(missing_ok=True)
    log_path = home / f"{name}.log"
    argv = [str(program), "-c", str(config_path), "--use-dynamic-base-id",
            "--admin-address-path", str(address_file),
            "--concurrency", str(concurrency), *envoy_flags(config_path)]  # fmt: skip
    process = ManagedProcess(
        f"envoy {name}", argv, log_path=log_path, ready=lambda: _envoy_ready(address_file)
    )
    process.start()
    try:
        admin_url = _admin_url(address_file)
        assert admin_url is not None
        yield EnvoyService(control=process, name=name, admin_url=admin_url, log_path=str(log_path))
    finally:
        process.stop()
