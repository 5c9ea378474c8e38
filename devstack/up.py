"""`make up`: render, start every part with the launcher, print the table, supervise, stop all.

The parts are `devstack.launcher`'s defaults, as local processes: PostgreSQL, Redis and OPA
when their programs are installed (otherwise the authz service's embedded defaults, listed in
the table). PostgreSQL is provisioned once as its superuser (devstack/provision.py);
everything after runs as its own login: migrations, the audit shipper, retention, and readers
(the demo, the backend). Any part that exits, or fails its liveness probe 3 times in a row, is
started again on its own ports and data, with a backoff; a crash loop stops the stack
(devstack/supervisor.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from devstack.free_ports import LOOPBACK
from devstack.launcher import (
    EVERY_COMPONENT,
    JOURNAL_DIR,
    Component,
    EntryPoint,
    Launched,
    LaunchSpec,
    launch,
)
from devstack.model import ServiceUnavailable
from devstack.programs import find_program
from devstack.stackconfig import (
    ACCESS_LOG_DIR,
    Ports,
    busy_ports,
    choose_ports,
    load_with_ports,
)
from devstack.stackconfig import render as render_config
from devstack.stackdb import LOGINS_FILE
from devstack.stackstate import STATE_FILE, StackState, Tracked, stop_stack
from devstack.supervisor import RestartPolicy, supervise
from gateway_config import GatewayConfig, load_gateway_config

READY_LINE = "devstack: ready"


@dataclass(frozen=True)
class UpOptions:
    config: Path
    var_dir: Path
    build_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    free_ports: bool = False
    policy: RestartPolicy = field(default_factory=RestartPolicy)  # backoff, crash, liveness


class Stopping(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM/SIGHUP arrived (e.g. `make down`): unwind and stop everything."""


@dataclass
class Stack:
    """What is running: the state file's contents, URLs to print, defaults in use."""

    state: StackState
    var_dir: Path
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def track(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.state.children = [c for c in self.state.children if c.name != name]
            self.state.children.append(Tracked.of(name, pid))
            self.state.write(self.var_dir)


def _say(message: str) -> None:
    print(message, flush=True)


def _installed(program: str, stack: Stack, fallback: str) -> bool:
    """Is `program` installed? If not, note the embedded default used instead."""
    try:
        find_program(program)
    except ServiceUnavailable as missing:
        stack.state.defaults.append(f"{fallback} ({missing})")
        return False
    return True


def _components(stack: Stack) -> frozenset[Component]:
    """Every component whose program is installed; the service's fallbacks for the others."""
    wanted = set(EVERY_COMPONENT)
    journal = stack.var_dir / JOURNAL_DIR
    if not _installed(
        "postgres", stack, f"audit: the journal on disk only, {journal} (no shipper)"
    ):
        wanted -= {"postgres", "shipper"}
    if not _installed("redis-server", stack, "budgets: in-process ledger (lost on restart)"):
        wanted.discard("redis")
    if not _installed("opa", stack, "policies: in-process Rego (regopy)"):
        wanted.discard("opa")
    return frozenset(wanted)


def _spec(options: UpOptions, config: GatewayConfig, ports: Ports, stack: Stack) -> LaunchSpec:
    entry_points = tuple(
        EntryPoint(name, entry.port, entry.readiness_path)
        for name, entry in config.entry_points.items()
    )
    return LaunchSpec(
        var_dir=options.var_dir,
        build_dir=options.build_dir,
        ports=dict(ports.by_name),
        entry_points=entry_points,
        components=_components(stack),
        transport=config.authz.transport,
        provider="local",
        wait_for_upstream=False,
    )


def _describe(stack: Stack, launched: Launched, config: GatewayConfig) -> None:
    """The table's rows and the state file's URLs."""
    spec, stores, state = launched.spec, launched.datastores, stack.state
    state.audit_journal_dir = str(spec.journal_dir)
    pg, database = launched.postgres, stores.database
    if pg is not None and database is not None:
        state.database_url = database.reader_dsn
        masked = f"postgresql://{database.logins.reader}:***@{pg.host}:{pg.port}/{pg.database}"
        stack.rows.append(("PostgreSQL", masked, f"audit rows (logins in var/{LOGINS_FILE})"))
    if stores.redis_url:
        stack.rows.append(("Redis", stores.redis_url, "budget ledger"))
    if stores.opa_url:
        stack.rows.append(("OPA", stores.opa_url, "policies/ loaded"))
    backend = f"http://{LOOPBACK}:{spec.ports['backend']}"
    stack.rows.append(("backend", backend, "echoes the identity headers it receives"))
    metrics, admin = f"{LOOPBACK}:{spec.ports['metrics']}", f"{LOOPBACK}:{spec.ports['admin']}"
    kind = "HTTP" if spec.transport == "http" else "gRPC"
    stack.rows.append((f"authz ({kind})", launched.authz_address(),
                       f"metrics http://{metrics}/metrics, admin API {admin}"))  # fmt: skip
    if "shipper" in launched.parts:
        health = f"{LOOPBACK}:{spec.ports['shipper']}"
        state.shipper_health_url = f"http://{health}/health"
        stack.rows.append(("audit shipper", state.shipper_health_url,
                           f"metrics http://{health}/metrics"))  # fmt: skip
    for name, entry in config.entry_points.items():
        url = state.urls[name] = f"http://{LOOPBACK}:{entry.port}"
        admin_url = launched.envoys[name].admin_url
        stack.rows.append((f"{entry.gateway_type.value} entry point", url, f"admin {admin_url}"))


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
    spec = _spec(options, config, ports, stack)
    _say("devstack: starting " + ", ".join(sorted(spec.components)))
    # ExitStack outermost: signals are ignored before the processes are stopped
    try:
        with contextlib.ExitStack() as exits, _signals_stop():
            launched = exits.enter_context(launch(spec, stack.track))
            _describe(stack, launched, config)
            stack.state.ready = True
            stack.state.write(options.var_dir)
            _print_table(stack)
            _say(f"{READY_LINE} (state {options.var_dir / STATE_FILE})")
            try:
                return supervise(launched.parts, launched.logs, _say, stack.track,
                                 policy=options.policy)  # fmt: skip
            finally:
                _say("devstack: stopping")
    except (KeyboardInterrupt, Stopping):
        return 0
    except (ServiceUnavailable, OSError) as error:
        _say(f"devstack: error: {error}")
        return 1


def run(options: UpOptions) -> int:
    """Start the stack, print the table, supervise until a signal or a crash; stop everything."""
    var_dir = options.var_dir.resolve()
    build_dir = options.build_dir.resolve()
    options = UpOptions(
        options.config, var_dir, build_dir, options.ports, options.free_ports, options.policy
    )
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
