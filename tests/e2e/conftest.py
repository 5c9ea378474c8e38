"""E2E harness: render a test gateway config and start it with devstack's launcher.

Every stack runs on the real services by default: the session's OPA, Redis (a database of
its own per stack, emptied first) and PostgreSQL (a provisioned, migrated e2e database the
stack's audit shipper writes to). `StackOptions(fallbacks=True)` runs the authz service on
its in-process fallbacks instead (embedded Rego, in-process ledger, the journal on disk only,
no shipper): the `fallbacks` tests (test_fallbacks.py).

Fixtures:
- `gateway_stack` (module scope): the whole stack with the options of `gateway_stack_options`.
  Modules that keep the default options share one stack per transport for the session (they
  do not disturb it); override that fixture in a test module to change them:

      @pytest.fixture(scope="module")
      def gateway_stack_options() -> StackOptions:
          return StackOptions(authz_env={"AUTHZ_POLICY_CACHE_SECONDS": "0"})

- `gateway_stack_factory` (function scope): `gateway_stack_factory(StackOptions(...))` for a
  stack of one test's own (e.g. one whose Envoys get re-rendered).

`StackOptions` and `GatewayStack` are re-exported by the `gateway_stack_types` fixture for
tests that want to build options without importing this conftest.
The stack offers `request(entry, method, path, token=..., headers=..., body=...)` (raw
http.client, so paths are sent exactly as written), `sign_token(...)` and `rerender(...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml

from devstack import EnvoyService, OpaService, PostgresService, RedisService, ServiceUnavailable
from devstack.free_ports import free_ports
from devstack.launcher import Component, Datastores, EntryPoint, Launched, LaunchSpec, launch
from devstack.model import ServiceControl
from devstack.provision import Provisioned
from gateway_config import deep_merge
from render import render_all
from tests.integration._audit_db import provisioned_database
from tests.support.issuers import every_issuer, hs256_token, issuers_json
from tests.support.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "config" / "gateway.yaml"
ENTRY_POINTS = ("plant", "cp", "pp")
TRANSPORTS = ("grpc", "http")
START_TIMEOUT_S = 30.0
REDIS_DATABASES = 16  # redis-server's default `databases`: one per live stack, 0 left alone
# the shipper of a test stack polls often and retries soon: rows land within the tests' waits;
# no retention runs (the rows are minutes old; every stack's shipper shares one database)
E2E_SHIPPER_ENV = {
    "AUTHZ_SHIPPER_POLL_SECONDS": "0.05",
    "AUTHZ_SHIPPER_RETRY_SECONDS": "0.5",
    "AUTHZ_SHIPPER_RETENTION_DATABASE_URL": "",
}

# cust-tight has a budget of 2 a day (test_authz_checks.py's 402)
TEST_BUDGETS = {"budgets": {"overrides": {"customers": {"cust-tight": {"api_calls": {"day": 2}}}}}}
# Routes the e2e tests need beyond the example: a slow one (timeouts) and large uploads.
TEST_ROUTES: list[dict[str, Any]] = [
    {
        "id": "slow",
        "match": {"path": "/api/v1/slow", "methods": ["GET"]},
        "entry_points": list(ENTRY_POINTS),
        "upstream": "backend",
        "permission": "orders:read",
        "timeout_ms": 400,
    },
    {
        "id": "uploads",
        "match": {"path": "/api/v1/uploads", "methods": ["POST"]},
        "entry_points": list(ENTRY_POINTS),
        "upstream": "backend",
        "permission": "orders:write",
        "max_request_bytes": 4 * 1_048_576,
    },
]


@dataclass
class StackOptions:
    """What a stack runs with; the defaults give the example config on free ports, on the
    real OPA, Redis and PostgreSQL with the audit shipper."""

    authz_env: dict[str, str] = field(default_factory=dict)  # extra AUTHZ_* variables
    backend_env: dict[str, str] = field(default_factory=dict)  # e.g. BACKEND_DATABASE_URL
    # deep-merged (not lists) into the example config
    config_overrides: dict[str, Any] = field(default_factory=lambda: dict(TEST_BUDGETS))
    extra_routes: list[dict[str, Any]] = field(default_factory=lambda: list(TEST_ROUTES))
    with_authz: bool = True  # False: no authz service (and no shipper)
    entry_points: tuple[str, ...] = ENTRY_POINTS  # which Envoys to start
    authz_timeout_ms: int = 1000  # the example's 250 ms is tight on a busy 2-core test box
    wait_for_upstream: bool = True  # wait until /health answers 200 through every entry point
    # extra AUTHZ_SHIPPER_* (e.g. a database of the test's own: AUTHZ_SHIPPER_DATABASE_URL)
    shipper_env: dict[str, str] = field(default_factory=dict)
    # the authz service's in-process fallbacks: embedded Rego, in-process ledger, journal only
    fallbacks: bool = False
    # Envoy's ext_authz transport (authz.transport): every stack fixture runs once per one
    transport: str = "grpc"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def send(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP/1.1 request to 127.0.0.1:port with the path sent exactly as given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    eventually(check, timeout, what=what, ignore=(OSError, grpc.RpcError))


@dataclass
class GatewayStack:
    workdir: Path
    options: StackOptions
    config_path: Path
    out_dir: Path
    ports: dict[str, int]  # plant, cp, pp, <name>_admin, plant_internal, backend, authz, ...
    revision: str = ""
    launched: Launched | None = None

    @property
    def runtime_config_path(self) -> Path:
        return self.out_dir / "authz" / "runtime.json"

    @property
    def spec(self) -> LaunchSpec:
        assert self.launched is not None, "the stack is not started"
        return self.launched.spec

    @property
    def journal_dir(self) -> Path:
        return self.spec.journal_dir

    @property
    def access_log_dir(self) -> Path:
        return self.workdir / "access-logs"

    @property
    def access_log_manifest(self) -> Path:
        return self.out_dir / "audit" / "access_logs.json"

    @property
    def envoys(self) -> dict[str, EnvoyService]:
        assert self.launched is not None, "the stack is not started"
        return self.launched.envoys

    def part(self, name: str) -> ServiceControl:
        """A running part by its launcher name: backend, authz, shipper, envoy <entry>."""
        assert self.launched is not None, "the stack is not started"
        return self.launched.parts[name]

    def port(self, entry: str) -> int:
        return self.ports[entry]

    def request(
        self,
        entry: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """A request to an entry point (plant, cp, pp) with an optional bearer token."""
        sent = dict(headers or {})
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        return send(self.ports[entry], method, path, headers=sent, body=body, timeout=timeout)

    def sign_token(
        self,
        sub: str = "user-1",
        roles: tuple[str, ...] = ("customer",),
        customer_id: str | None = "cust-1",
        plan: str = "standard",
        trial_mode: bool = False,
        **kwargs: Any,
    ) -> str:
        """An HS256 token from the stack's trusted test issuer (tests/support/issuers.py)."""
        return hs256_token(sub, roles, customer_id, plan, trial_mode, **kwargs)

    def gateway_config(self, extra_routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The example config on this stack's ports, plus the option's and `extra_routes`."""
        raw = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        entry_points: dict[str, Any] = {
            name: {"port": self.ports[name], "admin": {"port": self.ports[f"{name}_admin"]}}
            for name in ENTRY_POINTS
        }
        entry_points["plant"]["internal"] = {"port": self.ports["plant_internal"]}
        ports = {
            "entry_points": entry_points,
            "upstreams": {"backend": {"port": self.ports["backend"]}},
            "authz": {
                "port": self.ports["authz"],
                "timeout_ms": self.options.authz_timeout_ms,
                "transport": self.options.transport,
            },
            "audit": {"access_log_dir": str(self.access_log_dir)},
        }
        raw = deep_merge(deep_merge(raw, ports), self.options.config_overrides)
        raw["routes"] = [*raw["routes"], *self.options.extra_routes, *(extra_routes or [])]
        return dict(raw)

    def rerender(self, extra_routes: list[dict[str, Any]] | None = None) -> str:
        """Write the config (with `extra_routes`) and render it in place; returns the revision."""
        self.config_path.write_text(yaml.safe_dump(self.gateway_config(extra_routes)))
        self.revision = render_all(self.config_path, self.out_dir).revision
        return self.revision


def kill_part(stack: GatewayStack, name: str) -> None:
    """SIGKILL a part (authz, shipper, backend): no shutdown, nothing flushed."""
    part = stack.part(name)
    pid = part.pid
    assert pid is not None, f"{name} was never started"
    assert part.running, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not part.running, 30, what=f"{name} to exit")


def restart_part(stack: GatewayStack, name: str) -> None:
    """Start a part that exited again: the same settings (journal dir, ports); waits for it."""
    part = stack.part(name)
    assert not part.running, f"stop {name} before restarting it"
    part.stop()  # reap it
    part.start()


def shipper_health(stack: GatewayStack) -> tuple[int, dict[str, Any]]:
    """GET the shipper's /health: (status, body); (0, {}) when it does not answer."""
    try:
        reply = send(stack.ports["shipper"], "GET", "/health", timeout=2)
    except OSError:
        return 0, {}
    return reply.status, reply.json()


def _components(options: StackOptions) -> frozenset[Component]:
    wanted: set[Component] = {"backend", "envoy"}
    if options.with_authz:
        wanted.add("authz")
        if not options.fallbacks:
            wanted.add("shipper")
    return frozenset(wanted)


def _spec(stack: GatewayStack, datastores: Datastores) -> LaunchSpec:
    options = stack.options
    return LaunchSpec(
        var_dir=stack.workdir,
        build_dir=stack.out_dir,
        ports=stack.ports,
        entry_points=tuple(EntryPoint(name, stack.ports[name]) for name in options.entry_points),
        components=_components(options),
        transport="http" if options.transport == "http" else "grpc",
        datastores=Datastores() if options.fallbacks else datastores,
        jwt_issuers=issuers_json(every_issuer()),
        # the tests' machine crash is not simulated; speed matters
        authz_env={"AUTHZ_AUDIT_FSYNC": "off", **options.authz_env},
        backend_env=options.backend_env,
        shipper_env={**E2E_SHIPPER_ENV, **options.shipper_env},
        wait_for_upstream=options.wait_for_upstream,
    )


@contextlib.contextmanager
def gateway_stack_running(
    workdir: Path, options: StackOptions, datastores: Datastores
) -> Iterator[GatewayStack]:
    names = [
        *ENTRY_POINTS, *(f"{n}_admin" for n in ENTRY_POINTS), "plant_internal",
        "backend", "authz", "metrics", "admin", "shipper",
    ]  # fmt: skip
    stack = GatewayStack(
        workdir=workdir,
        options=options,
        config_path=workdir / "gateway.yaml",
        out_dir=workdir / "build",
        ports=dict(zip(names, free_ports(len(names)), strict=True)),
    )
    stack.rerender()
    with contextlib.ExitStack() as exits:
        try:
            stack.launched = exits.enter_context(launch(_spec(stack, datastores)))
        except ServiceUnavailable as error:
            pytest.fail(f"required service unavailable: {error}", pytrace=False)
        yield stack


@dataclass
class SessionDatastores:
    """The session's real OPA, Redis and e2e database, shared by every stack: each stack gets
    a Redis database of its own, emptied first, so no stack spends another's budgets."""

    redis: RedisService
    opa: OpaService
    database: Provisioned
    in_use: set[int] = field(default_factory=set)

    @contextlib.contextmanager
    def lease(self) -> Iterator[Datastores]:
        index = min(set(range(1, REDIS_DATABASES)) - self.in_use)
        url = f"redis://{self.redis.host}:{self.redis.port}/{index}"
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        self.in_use.add(index)
        try:
            yield Datastores(redis_url=url, opa_url=self.opa.url, database=self.database)
        finally:
            self.in_use.discard(index)


@pytest.fixture(scope="session")
def e2e_datastores(
    postgres: PostgresService, redis_service: RedisService, opa_service: OpaService
) -> SessionDatastores:
    """The real services every e2e stack runs on unless its options ask for the fallbacks."""
    return SessionDatastores(redis_service, opa_service, provisioned_database(postgres, "e2e"))


@pytest.fixture(scope="session")
def shared_gateway_stacks(
    tmp_path_factory: pytest.TempPathFactory, e2e_datastores: SessionDatastores
) -> Iterator[Callable[[str], GatewayStack]]:
    """One stack with the default options per transport, started on first use: for the
    modules that only send requests to it."""
    started: dict[str, GatewayStack] = {}
    with contextlib.ExitStack() as exits:

        def get(transport: str) -> GatewayStack:
            if transport not in started:
                options = StackOptions(transport=transport)
                workdir = tmp_path_factory.mktemp(f"shared-{transport}")
                datastores = exits.enter_context(e2e_datastores.lease())
                stack = gateway_stack_running(workdir, options, datastores)
                started[transport] = exits.enter_context(stack)
            return started[transport]

        yield get


@pytest.fixture(scope="module")
def gateway_stack_options() -> StackOptions:
    """Override in a test module to run its `gateway_stack` with other options."""
    return StackOptions()


@pytest.fixture(scope="module", params=TRANSPORTS)
def authz_transport(request: pytest.FixtureRequest) -> str:
    """Every stack runs over each ext_authz transport: the suite runs once per transport."""
    return str(request.param)


@pytest.fixture(scope="module")
def gateway_stack(
    tmp_path_factory: pytest.TempPathFactory,
    gateway_stack_options: StackOptions,
    authz_transport: str,
    e2e_datastores: SessionDatastores,
    shared_gateway_stacks: Callable[[str], GatewayStack],
) -> Iterator[GatewayStack]:
    options = dataclasses.replace(gateway_stack_options, transport=authz_transport)
    if options == StackOptions(transport=authz_transport):
        yield shared_gateway_stacks(authz_transport)
        return
    workdir = tmp_path_factory.mktemp("stack")
    with (
        e2e_datastores.lease() as datastores,
        gateway_stack_running(workdir, options, datastores) as stack,
    ):
        yield stack


@pytest.fixture
def gateway_stack_factory(
    tmp_path: Path, authz_transport: str, e2e_datastores: SessionDatastores
) -> Iterator[Callable[[StackOptions], GatewayStack]]:
    """Start stacks of a test's own (over the module's transport); all stop when it ends."""
    with contextlib.ExitStack() as exits:
        started: list[GatewayStack] = []

        def start(options: StackOptions) -> GatewayStack:
            workdir = tmp_path / f"stack{len(started)}"
            workdir.mkdir()
            options = dataclasses.replace(options, transport=authz_transport)
            datastores = exits.enter_context(e2e_datastores.lease())
            started.append(exits.enter_context(gateway_stack_running(workdir, options, datastores)))
            return started[-1]

        yield start


@pytest.fixture(scope="session")
def gateway_stack_types() -> tuple[type[StackOptions], type[GatewayStack]]:
    return StackOptions, GatewayStack
