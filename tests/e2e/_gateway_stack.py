"""An e2e gateway stack: the test config rendered on free ports, started by devstack's launcher;
requests to its entry points, test tokens, its parts killed and restarted (see conftest.py)."""

from __future__ import annotations

import contextlib
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
import yaml

from devstack import EnvoyService, ServiceUnavailable
from devstack.free_ports import free_ports
from devstack.launcher import Component, Datastores, EntryPoint, Launched, LaunchSpec, launch
from devstack.model import ServiceControl
from gateway_config import deep_merge
from render import render_all
from tests.support.issuers import every_issuer, hs256_token, issuers_json
from tests.support.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "config" / "gateway.yaml"
ENTRY_POINTS = ("plant", "cp", "pp")
TRANSPORTS = ("grpc", "http")
START_TIMEOUT_S = 30.0
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
