"""`make up`: render, start every part as a local process, wait for health, supervise, stop all.

PostgreSQL, Redis and OPA come from the provisioning layer (local provider) when their
programs are installed; otherwise the authz service uses its embedded defaults. PostgreSQL
is provisioned once as its superuser (devstack/provision.py); everything after runs as its
own login: migrations, the audit shipper, retention, and readers (the demo, the backend).
The audit shipper is restarted when it exits; any other part exiting stops the stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from authz_service import health_probe
from devstack import devkey
from devstack.free_ports import LOOPBACK
from devstack.local import envoy, opa, postgres, redis_server
from devstack.model import ServiceUnavailable
from devstack.process import ManagedProcess
from devstack.programs import find_program
from devstack.provision import Provisioned
from devstack.stackconfig import (
    ACCESS_LOG_DIR,
    REPO_ROOT,
    Ports,
    busy_ports,
    choose_ports,
    http_status,
    load_with_ports,
)
from devstack.stackconfig import render as render_config
from devstack.stackdb import LOGINS_FILE, migrate, provision_database
from devstack.stackstate import STATE_FILE, StackState, Tracked, stop_stack
from devstack.supervisor import supervise
from gateway_config import GatewayConfig, load_gateway_config

READY_LINE = "devstack: ready"


@dataclass(frozen=True)
class UpOptions:
    config: Path
    var_dir: Path
    build_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    free_ports: bool = False


class Stopping(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM/SIGHUP arrived (e.g. `make down`): unwind and stop everything."""


@dataclass
class Stack:
    """What is running: processes to watch, URLs to print, defaults in use."""

    state: StackState
    var_dir: Path
    watched: dict[str, Callable[[], bool]] = field(default_factory=dict)
    # parts restarted when they exit (the others stop the stack): name -> start again
    restarts: dict[str, Callable[[], int | None]] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    database: Provisioned | None = None

    def track(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.state.children = [c for c in self.state.children if c.name != name]
            self.state.children.append(Tracked.of(name, pid))
            self.state.write(self.var_dir)


def _say(message: str) -> None:
    print(message, flush=True)


def _optional(program: str, stack: Stack, fallback: str) -> bool:
    """Is `program` installed? If not, note the embedded default used instead."""
    try:
        find_program(program)
    except ServiceUnavailable as missing:
        stack.state.defaults.append(f"{fallback} ({missing})")
        return False
    return True


def _start_datastores(stack: Stack, exits: contextlib.ExitStack) -> None:
    """PostgreSQL (provisioned, migrated), Redis and OPA where installed; data under var/."""
    journal = stack.var_dir / "audit-journal"
    stack.env["AUTHZ_AUDIT_JOURNAL_DIR"] = str(journal)
    stack.state.audit_journal_dir = str(journal)
    if _optional("postgres", stack, f"audit: the journal on disk only, {journal} (no shipper)"):
        _say("devstack: starting PostgreSQL, provisioning it and applying migrations")
        pg = exits.enter_context(postgres(stack.var_dir))
        stack.track("postgres", pg.pid)
        stack.watched["postgres"] = lambda: pg.running
        stack.database = provision_database(pg, stack.var_dir)
        migrate(stack.database.migrator_dsn, stack.var_dir)
        stack.env["BACKEND_DATABASE_URL"] = stack.database.dsn(stack.database.logins.backend)
        stack.state.database_url = stack.database.reader_dsn
        login = stack.database.logins.reader
        masked = f"postgresql://{login}:***@{pg.host}:{pg.port}/{pg.database}"
        stack.rows.append(("PostgreSQL", masked, f"audit rows (logins in var/{LOGINS_FILE})"))
    if _optional("redis-server", stack, "budgets: in-process ledger (lost on restart)"):
        rd = exits.enter_context(redis_server(stack.var_dir))
        stack.track("redis", rd.pid)
        stack.watched["redis"] = lambda: rd.running
        stack.env["AUTHZ_REDIS_URL"] = rd.url
        stack.rows.append(("Redis", rd.url, "budget ledger"))
    if _optional("opa", stack, "policies: in-process Rego (regopy)"):
        op = exits.enter_context(opa(stack.var_dir, REPO_ROOT / "policies"))
        stack.track("opa", op.pid)
        stack.watched["opa"] = lambda: op.running
        stack.env["AUTHZ_OPA_URL"] = op.url
        stack.rows.append(("OPA", op.url, "policies/ loaded"))


def _process(  # noqa: PLR0917 - the parts of one process, all named at the call
    stack: Stack,
    exits: contextlib.ExitStack,
    name: str,
    argv: list[str],
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    *,
    restart: bool = False,
) -> None:
    process = ManagedProcess(
        name,
        argv,
        log_path=stack.var_dir / "logs" / f"{name}.log",
        ready=ready,
        env={**os.environ, **stack.env, **(env or {})},
    )
    process.start()
    exits.callback(process.stop)
    stack.track(name, process.pid)
    stack.watched[name] = lambda: process.running
    if restart:

        def again() -> int | None:
            process.stop()  # reap what is left of it
            process.start()
            stack.track(name, process.pid)
            return process.pid

        stack.restarts[name] = again


def _start_apps(
    stack: Stack,
    exits: contextlib.ExitStack,
    ports: Ports,
    options: UpOptions,
    transport: str = "grpc",
) -> None:
    backend_url = f"http://{LOOPBACK}:{ports['backend']}"
    _say("devstack: starting the backend and the authz service")
    _process(
        stack,
        exits,
        "backend",
        [sys.executable, "-m", "backend", "--host", LOOPBACK, "--port", str(ports["backend"])],
        lambda: http_status(f"{backend_url}/health") == 200,
    )
    stack.rows.append(("backend", backend_url, "echoes the identity headers it receives"))
    issuer = devkey.load_or_create(options.var_dir)
    authz = f"{LOOPBACK}:{ports['authz']}"
    metrics = f"{LOOPBACK}:{ports['metrics']}"
    admin = f"{LOOPBACK}:{ports['admin']}"
    http = transport == "http"  # the config's authz.transport: which one Envoy calls
    stack.env |= {
        "AUTHZ_GRPC_ADDRESS": "" if http else authz,
        "AUTHZ_HTTP_ADDRESS": authz if http else "",
        "AUTHZ_RUNTIME_CONFIG": str(options.build_dir / "authz" / "runtime.json"),
        "AUTHZ_JWT_ISSUERS": issuer.settings_json(),
        "AUTHZ_POLICY_DIR": str(REPO_ROOT / "policies"),
        "AUTHZ_METRICS_ADDRESS": metrics,
        "AUTHZ_ADMIN_ADDRESS": admin,
    }
    _process(
        stack,
        exits,
        "authz",
        [sys.executable, "-m", "authz_service", "serve"],
        (lambda: http_status(f"http://{authz}/health") == 200)
        if http
        else (lambda: health_probe.serving(authz)),
    )
    stack.rows.append(
        (
            f"authz ({'HTTP' if http else 'gRPC'})",
            authz,
            f"metrics http://{metrics}/metrics, admin API {admin}",
        )
    )


def _start_shipper(stack: Stack, exits: contextlib.ExitStack, ports: Ports, build: Path) -> None:
    """The audit shipper as its own login, restarted whenever it exits."""
    if stack.database is None:
        return
    health = f"{LOOPBACK}:{ports['shipper']}"
    env = {
        "AUTHZ_SHIPPER_DATABASE_URL": stack.database.shipper_dsn,
        "AUTHZ_SHIPPER_RETENTION_DATABASE_URL": stack.database.retention_dsn,
        "AUTHZ_SHIPPER_JOURNAL_DIR": stack.env["AUTHZ_AUDIT_JOURNAL_DIR"],
        "AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST": str(build / "audit" / "access_logs.json"),
        "AUTHZ_SHIPPER_HEALTH_ADDRESS": health,
    }
    url = f"http://{health}/health"
    _process(stack, exits, "shipper", [sys.executable, "-m", "authz_service", "audit", "ship"],
             lambda: http_status(url) != 0, env, restart=True)  # fmt: skip
    stack.state.shipper_health_url = url
    stack.rows.append(("audit shipper", url, f"metrics http://{health}/metrics"))


def _start_envoys(
    stack: Stack, exits: contextlib.ExitStack, config: GatewayConfig, options: UpOptions
) -> None:
    _say("devstack: starting Envoy for " + ", ".join(config.entry_points))
    for name, entry in config.entry_points.items():
        path = options.build_dir / "envoy" / f"{name}.yaml"
        service = exits.enter_context(envoy(stack.var_dir, path, name=name))
        stack.track(f"envoy {name}", service.pid)
        stack.watched[f"envoy {name}"] = lambda s=service: s.running  # type: ignore[misc]
        url = f"http://{LOOPBACK}:{entry.port}"
        ready = f"{url}{entry.readiness_path}"
        what = f"envoy {name} ({ready}; log {service.log_path})"
        _wait(what, lambda r=ready: http_status(r) == 200)  # type: ignore[misc]
        stack.state.urls[name] = url
        label = f"{entry.gateway_type.value} entry point"
        stack.rows.append((label, url, f"admin {service.admin_url}"))


def _wait(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{what} not healthy after {timeout:.0f}s")
        time.sleep(0.1)


def _print_table(stack: Stack) -> None:
    width = max(len(row[0]) for row in stack.rows)
    url_width = max(len(row[1]) for row in stack.rows)
    _say("")
    for name, url, note in stack.rows:
        _say(f"  {name:<{width}}  {url:<{url_width}}  {note}")
    _say("\n  embedded defaults in use:" + ("" if stack.state.defaults else " none"))
    for default in stack.state.defaults:
        _say(f"    - {default}")
    _say(
        "\n  development token:  make token ROLE=customer CUSTOMER=cust-1"
        "  (options: PLAN=trial TRIAL=1)\n"
        f'  try:  curl -H "Authorization: Bearer $(make -s token)" '
        f"{stack.state.urls.get('cp', '')}/api/v1/me\n"
        "  walk-through: make demo      stop: Ctrl-C or make down\n"
    )


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopping(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        # Stopping must finish: a second Ctrl-C or TERM must not leave orphans behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def _prepare(options: UpOptions) -> tuple[GatewayConfig, Ports] | None:
    """Refuse a second stack, pick and check the ports, render; None when it cannot start."""
    previous = StackState.read(options.var_dir)
    if previous is not None and previous.supervisor.alive():
        pid = previous.supervisor.pid
        _say(f"devstack: already running (PID {pid}); `make down` stops it")
        return None
    stop_stack(options.var_dir)  # leftovers of a crashed earlier run, if any
    ports = choose_ports(
        load_gateway_config(options.config), options.ports, free=options.free_ports
    )
    busy = busy_ports(ports)
    if busy:
        _say(f"devstack: ports already in use: {', '.join(busy)} (another `make up`?)")
        return None
    config, overrides = load_with_ports(options.config, ports)
    # Envoy's audit access logs under VAR_DIR (render makes the path absolute)
    overrides["audit"] = {"access_log_dir": str(options.var_dir / ACCESS_LOG_DIR)}
    revision = render_config(options.config, overrides, options.build_dir)
    _say(f"devstack: rendered {options.config} (revision {revision[:12]})")
    return config, ports


def _run_stack(options: UpOptions, config: GatewayConfig, ports: Ports) -> int:
    supervisor = Tracked.of("devstack up", os.getpid())
    state = StackState(supervisor=supervisor, ports=dict(ports.by_name))
    stack = Stack(state=state, var_dir=options.var_dir)
    stack.state.write(options.var_dir)
    # ExitStack outermost: signals are ignored before the processes are stopped
    with contextlib.ExitStack() as exits, _signals_stop():
        try:
            _start_datastores(stack, exits)
            _start_apps(stack, exits, ports, options, config.authz.transport)
            _start_shipper(stack, exits, ports, options.build_dir)
            _start_envoys(stack, exits, config, options)
            stack.state.ready = True
            stack.state.write(options.var_dir)
            _print_table(stack)
            _say(f"{READY_LINE} (state {options.var_dir / STATE_FILE})")
            return supervise(stack.watched, stack.restarts, stack.var_dir / "logs", _say)
        except (KeyboardInterrupt, Stopping):
            return 0
        except (ServiceUnavailable, OSError) as error:
            _say(f"devstack: error: {error}")
            return 1
        finally:
            _say("devstack: stopping")


def run(options: UpOptions) -> int:
    """Start the stack, print the table, supervise until a signal or a crash; stop everything."""
    var_dir = options.var_dir.resolve()
    build_dir = options.build_dir.resolve()
    options = UpOptions(options.config, var_dir, build_dir, options.ports, options.free_ports)
    (var_dir / "logs").mkdir(parents=True, exist_ok=True)
    try:
        prepared = _prepare(options)
    except ValueError as error:  # ConfigError included: `file: key.path: reason`
        _say(f"devstack: error: {error}")
        return 1
    if prepared is None:
        return 1
    try:
        return _run_stack(options, *prepared)
    finally:
        (var_dir / STATE_FILE).unlink(missing_ok=True)
        _say("devstack: stopped")
