"""The one way to start the gateway: `launch(LaunchSpec(...))`, for `make up`, the e2e tests and
the bench (which starts only the datastores with it, and its own fronts).

A spec names the components to start, the ports of the gateway's own listeners, the var dir
(data, logs, the audit journal, Envoy's access logs), the build dir render wrote, the authz
transport and its workers. Its defaults are what `make up` runs: PostgreSQL (provisioned and
migrated), Redis, OPA, the backend, the authz service, the audit shipper and every Envoy.
Datastores not started here come from `LaunchSpec.datastores` (tests share the session's);
an empty URL there is the authz service's in-process fallback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from devstack import devkey
from devstack.free_ports import LOOPBACK
from devstack.model import EnvoyService, PostgresService, ServiceControl, ServiceUnavailable
from devstack.parts import Transport, authz_process, backend_process, shipper_process
from devstack.probes import http_get
from devstack.process import ManagedProcess
from devstack.provision import Provisioned
from devstack.services import provision_envoy, provision_opa, provision_postgres, provision_redis
from devstack.stackconfig import ACCESS_LOG_DIR, REPO_ROOT
from devstack.stackdb import migrate, provision_database

Component = Literal["postgres", "redis", "opa", "backend", "authz", "shipper", "envoy"]
EVERY_COMPONENT: frozenset[Component] = frozenset(get_args(Component))
JOURNAL_DIR = "audit-journal"  # under the var dir: the authz service's journals
ENVOY_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Datastores:
    """Where the authz service and the shipper find their dependencies. Empty: the fallbacks
    (in-process ledger, embedded Rego, the journal on disk only and no shipper)."""

    redis_url: str = ""
    opa_url: str = ""
    database: Provisioned | None = None


@dataclass(frozen=True)
class EntryPoint:
    """One Envoy to start from `<build dir>/envoy/<name>.yaml` and the port to wait on."""

    name: str
    port: int
    readiness_path: str = "/ready"


@dataclass(frozen=True)
class LaunchSpec:
    """What to start, where. `ports` names the gateway's own listeners: backend, authz,
    metrics, admin (empty or absent: off), shipper."""

    var_dir: Path
    build_dir: Path
    ports: Mapping[str, int]
    entry_points: tuple[EntryPoint, ...] = ()
    components: frozenset[Component] = EVERY_COMPONENT
    transport: Transport = "grpc"
    workers: int = 1
    datastores: Datastores = Datastores()  # used for the datastores not in `components`
    jwt_issuers: str = ""  # AUTHZ_JWT_ISSUERS; empty: the development issuer under var_dir
    authz_env: Mapping[str, str] = field(default_factory=dict)  # wins over the launcher's
    backend_env: Mapping[str, str] = field(default_factory=dict)
    shipper_env: Mapping[str, str] = field(default_factory=dict)
    provider: str | None = None  # GATEWAY_PROVIDER for PostgreSQL, Redis, OPA, Envoy
    wait_for_upstream: bool = True  # wait until /health answers 200 through every entry point
    policy_dir: Path = REPO_ROOT / "policies"

    @property
    def journal_dir(self) -> Path:
        return self.var_dir / JOURNAL_DIR

    @property
    def access_log_dir(self) -> Path:
        return self.var_dir / ACCESS_LOG_DIR


@dataclass
class Launched:
    """What runs: each part's control (start, stop, running, pid) and log, by name."""

    spec: LaunchSpec
    datastores: Datastores = Datastores()
    parts: dict[str, ServiceControl] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    envoys: dict[str, EnvoyService] = field(default_factory=dict)
    postgres: PostgresService | None = None

    def authz_address(self) -> str:
        return f"{LOOPBACK}:{self.spec.ports['authz']}"


OnStart = Callable[[str, int | None], None]


def _address(spec: LaunchSpec, name: str) -> str:
    port = spec.ports.get(name)
    return f"{LOOPBACK}:{port}" if port else ""


class _Starter:
    """Starts the parts in order; every one stops with `exits`."""

    def __init__(self, spec: LaunchSpec, exits: contextlib.ExitStack, on_start: OnStart) -> None:
        self.spec, self.exits, self.on_start = spec, exits, on_start
        self.launched = Launched(spec, spec.datastores)
        self.logs = spec.var_dir / "logs"

    def _add(self, name: str, control: ServiceControl, log: Path) -> None:
        self.launched.parts[name] = control
        # a local process knows its log; a container's is the engine's, named here
        self.launched.logs[name] = control.log_path if isinstance(control, ManagedProcess) else log
        self.on_start(name, control.pid)

    def _process(self, process: ManagedProcess) -> None:
        process.start()
        self.exits.callback(process.stop)
        self._add(process.name, process, process.log_path)

    def datastores(self) -> None:
        spec, wanted = self.spec, self.spec.components
        found = spec.datastores
        if "postgres" in wanted:
            pg = self.exits.enter_context(provision_postgres(spec.var_dir, provider=spec.provider))
            self._add("postgres", pg.control, spec.var_dir / "postgres" / "postgres.log")
            database = provision_database(pg, spec.var_dir)
            migrate(database.migrator_dsn, spec.var_dir)
            self.launched.postgres = pg
            found = Datastores(found.redis_url, found.opa_url, database)
        if "redis" in wanted:
            rd = self.exits.enter_context(provision_redis(spec.var_dir, provider=spec.provider))
            self._add("redis", rd.control, spec.var_dir / "redis" / "redis.log")
            found = Datastores(rd.url, found.opa_url, found.database)
        if "opa" in wanted:
            op = self.exits.enter_context(
                provision_opa(spec.var_dir, spec.policy_dir, provider=spec.provider)
            )
            self._add("opa", op.control, spec.var_dir / "opa" / "opa.log")
            found = Datastores(found.redis_url, op.url, found.database)
        self.launched.datastores = found

    def backend(self) -> None:
        env = dict(self.spec.backend_env)
        database = self.launched.datastores.database
        if "postgres" in self.spec.components and database is not None:
            env.setdefault("BACKEND_DATABASE_URL", database.dsn(database.logins.backend))
        log = self.logs / "backend.log"
        self._process(backend_process(self.spec.ports["backend"], log, env))

    def authz(self) -> None:
        spec, stores = self.spec, self.launched.datastores
        issuers = spec.jwt_issuers or devkey.load_or_create(spec.var_dir).settings_json()
        env = {
            "AUTHZ_RUNTIME_CONFIG": str(spec.build_dir / "authz" / "runtime.json"),
            "AUTHZ_JWT_ISSUERS": issuers,
            "AUTHZ_POLICY_DIR": str(spec.policy_dir),
            "AUTHZ_METRICS_ADDRESS": _address(spec, "metrics"),
            "AUTHZ_ADMIN_ADDRESS": _address(spec, "admin"),
            "AUTHZ_AUDIT_JOURNAL_DIR": str(spec.journal_dir),
            "AUTHZ_OPA_URL": stores.opa_url,
            "AUTHZ_REDIS_URL": stores.redis_url,
            "AUTHZ_WORKERS": str(spec.workers),
            **spec.authz_env,
        }
        address = self.launched.authz_address()
        self._process(authz_process(address, spec.transport, env, self.logs / "authz.log"))

    def shipper(self) -> None:
        spec, database = self.spec, self.launched.datastores.database
        if database is None:
            raise ServiceUnavailable("the audit shipper needs PostgreSQL (none started or given)")
        env = {
            "AUTHZ_SHIPPER_DATABASE_URL": database.shipper_dsn,
            "AUTHZ_SHIPPER_RETENTION_DATABASE_URL": database.retention_dsn,
            "AUTHZ_SHIPPER_JOURNAL_DIR": str(spec.journal_dir),
            "AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST": str(spec.build_dir / "audit" / "access_logs.json"),
            **spec.shipper_env,
        }
        health = _address(spec, "shipper")
        self._process(shipper_process(health, env, self.logs / "shipper.log"))

    def envoys(self) -> None:
        spec = self.spec
        # PLANT first: CP and PP health-check it and forward to it
        for entry in sorted(spec.entry_points, key=lambda e: e.name != "plant"):
            config = spec.build_dir / "envoy" / f"{entry.name}.yaml"
            service = self.exits.enter_context(
                provision_envoy(spec.var_dir, config, name=entry.name, provider=spec.provider,
                                log_dir=spec.access_log_dir)
            )  # fmt: skip
            self.launched.envoys[entry.name] = service
            self._add(f"envoy {entry.name}", service.control, Path(service.log_path))
            wait_for_entry_point(entry, upstream=spec.wait_for_upstream)


def wait_for_entry_point(entry: EntryPoint, *, upstream: bool) -> None:
    """Its readiness route answers 200; with `upstream`, /health through it too (the public
    health route answers only once this hop's upstream is healthy)."""
    url = f"http://{LOOPBACK}:{entry.port}"
    wait_for(f"envoy {entry.name} ({url}{entry.readiness_path})",
             lambda: http_get(f"{url}{entry.readiness_path}")[0] == 200)  # fmt: skip
    if upstream:
        wait_for(f"/health through {entry.name}", lambda: http_get(f"{url}/health", 2)[0] == 200)


def wait_for(what: str, ready: Callable[[], bool], timeout: float = ENVOY_READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{what} not healthy after {timeout:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def launch(spec: LaunchSpec, on_start: OnStart | None = None) -> Iterator[Launched]:
    """Start the spec's components in order (datastores, backend, authz, shipper, Envoys);
    stop every one on exit. `on_start(name, pid)` hears of each as it starts."""
    (spec.var_dir / "logs").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as exits:
        starter = _Starter(spec, exits, on_start or (lambda _name, _pid: None))
        starter.datastores()
        wanted = spec.components
        steps = {"backend": starter.backend, "authz": starter.authz,
                 "shipper": starter.shipper, "envoy": starter.envoys}  # fmt: skip
        for component, step in steps.items():
            if component in wanted:
                step()
        yield starter.launched
