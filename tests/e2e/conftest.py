"""E2E harness: render a test gateway config, start backend, authz service and three Envoys.

Fixtures:
- `gateway_stack` (module scope): the whole stack with the options of `gateway_stack_options`.
  Override that fixture in a test module to change them, e.g. to pass Redis/OPA/database URLs:

      @pytest.fixture(scope="module")
      def gateway_stack_options(redis_service):
          return StackOptions(authz_env={"AUTHZ_REDIS_URL": redis_service.url})

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
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_service.devtokens import sign_dev_token
from devstack import EnvoyService, ServiceUnavailable, provision_envoy
from gateway_config import deep_merge
from render import render_all

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "config" / "gateway.yaml"
ISSUER = "https://issuer.test"
AUDIENCE = "gateway"
HS256_SECRET = "e2e-test-secret-that-is-at-least-32-characters"
ENTRY_POINTS = ("plant", "cp", "pp")
TRANSPORTS = ("grpc", "http")
START_TIMEOUT_S = 30.0

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
    """What a stack runs with; the defaults give the example config on free ports."""

    authz_env: dict[str, str] = field(default_factory=dict)  # extra AUTHZ_* variables
    backend_env: dict[str, str] = field(default_factory=dict)  # e.g. BACKEND_DATABASE_URL
    config_overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged (not lists)
    extra_routes: list[dict[str, Any]] = field(default_factory=lambda: list(TEST_ROUTES))
    with_authz: bool = True
    entry_points: tuple[str, ...] = ENTRY_POINTS  # which Envoys to start
    authz_timeout_ms: int = 1000  # the example's 250 ms is tight on a busy 2-core test box
    wait_for_upstream: bool = True  # wait until /health answers 200 through every entry point
    # the audit shipper's AUTHZ_SHIPPER_* (its database URL at least); None: no shipper
    shipper_env: dict[str, str] | None = None
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, grpc.RpcError):
            if check():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ChildProcess:
    """A child process with its output in a log file; stopped by its own PID."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> Any:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=log
            )
        return cls(name, process, log_path)

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class GatewayStack:
    workdir: Path
    options: StackOptions
    config_path: Path
    out_dir: Path
    ports: dict[str, int]  # plant, cp, pp, <name>_admin, plant_internal, backend, authz, ...
    revision: str = ""
    envoys: dict[str, EnvoyService] = field(default_factory=dict)
    processes: dict[str, ChildProcess] = field(default_factory=dict)

    @property
    def runtime_config_path(self) -> Path:
        return self.out_dir / "authz" / "runtime.json"

    @property
    def journal_dir(self) -> Path:
        return self.workdir / "journal"

    @property
    def access_log_dir(self) -> Path:
        return self.workdir / "access-logs"

    @property
    def access_log_manifest(self) -> Path:
        return self.out_dir / "audit" / "access_logs.json"

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
        """An HS256 token from the stack's trusted test issuer."""
        return sign_dev_token(
            HS256_SECRET, ISSUER, AUDIENCE, sub, roles, customer_id, plan, trial_mode, **kwargs
        )

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


def _authz_ready(port: int, transport: str) -> bool:
    if transport == "http":
        return send(port, "GET", "/health", timeout=1).status == 200
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _start_backend(stack: GatewayStack) -> None:
    backend = ChildProcess.start(
        "backend",
        [sys.executable, "-m", "backend", "--port", str(stack.ports["backend"])],
        stack.options.backend_env,
        stack.workdir / "backend.log",
    )
    stack.processes["backend"] = backend

    def answers() -> bool:
        backend.assert_running()
        return send(stack.ports["backend"], "GET", "/health", timeout=1).status == 200

    wait_until(answers, "the backend's /health")


def _start_authz(stack: GatewayStack) -> None:
    address = f"127.0.0.1:{stack.ports['authz']}"
    http = stack.options.transport == "http"
    env = {
        "AUTHZ_GRPC_ADDRESS": "" if http else address,
        "AUTHZ_HTTP_ADDRESS": address if http else "",
        "AUTHZ_RUNTIME_CONFIG": str(stack.runtime_config_path),
        "AUTHZ_JWT_ISSUERS": json.dumps(
            [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "algorithms": ["HS256"],
                    "hs256_secret": HS256_SECRET,
                }
            ]
        ),
        "AUTHZ_POLICY_DIR": str(REPO_ROOT / "policies"),
        "AUTHZ_OPA_URL": "",
        "AUTHZ_REDIS_URL": "",
        "AUTHZ_AUDIT_JOURNAL_DIR": str(stack.journal_dir),
        "AUTHZ_AUDIT_FSYNC": "off",  # the tests' machine crash is not simulated; speed matters
        "AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{stack.ports['metrics']}",
        "AUTHZ_ADMIN_ADDRESS": f"127.0.0.1:{stack.ports['admin']}",
        **stack.options.authz_env,
    }
    authz = ChildProcess.start(
        "authz service",
        [sys.executable, "-m", "authz_service", "serve"],
        env,
        stack.workdir / "authz.log",
    )
    stack.processes["authz"] = authz

    def serving() -> bool:
        authz.assert_running()
        return _authz_ready(stack.ports["authz"], stack.options.transport)

    wait_until(serving, "the authz service's grpc.health.v1 SERVING")


def shipper_health(stack: GatewayStack) -> tuple[int, dict[str, Any]]:
    """GET the shipper's /health: (status, body); (0, {}) when it does not answer."""
    try:
        reply = send(stack.ports["shipper"], "GET", "/health", timeout=2)
    except OSError:
        return 0, {}
    return reply.status, reply.json()


def start_shipper(stack: GatewayStack) -> None:
    """`python -m authz_service audit ship` on the stack's journals and access logs."""
    assert stack.options.shipper_env is not None
    env = {
        "AUTHZ_SHIPPER_JOURNAL_DIR": str(stack.journal_dir),
        "AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST": str(stack.access_log_manifest),
        "AUTHZ_SHIPPER_HEALTH_ADDRESS": f"127.0.0.1:{stack.ports['shipper']}",
        "AUTHZ_SHIPPER_POLL_SECONDS": "0.05",
        "AUTHZ_SHIPPER_RETRY_SECONDS": "0.5",
        **stack.options.shipper_env,
    }
    log_path = stack.workdir / f"shipper-{len(list(stack.workdir.glob('shipper-*.log')))}.log"
    shipper = ChildProcess.start(
        "audit shipper", [sys.executable, "-m", "authz_service", "audit", "ship"], env, log_path
    )
    stack.processes["shipper"] = shipper

    def answers() -> bool:
        shipper.assert_running()
        return shipper_health(stack)[0] != 0

    wait_until(answers, "the audit shipper's /health")


def _start_envoys(stack: GatewayStack, exits: contextlib.ExitStack) -> None:
    # PLANT first: CP and PP health-check it and forward to it
    for name in sorted(stack.options.entry_points, key=lambda n: n != "plant"):
        config = stack.out_dir / "envoy" / f"{name}.yaml"
        try:
            stack.envoys[name] = exits.enter_context(
                provision_envoy(stack.workdir, config, name=name, log_dir=stack.access_log_dir)
            )
        except ServiceUnavailable as error:
            pytest.fail(f"required service unavailable: {error}", pytrace=False)
        _wait_for_entry_point(stack, name)


def _wait_for_entry_point(stack: GatewayStack, name: str) -> None:
    port = stack.ports[name]
    wait_until(
        lambda: send(port, "GET", "/ready", timeout=1).status == 200, f"{name}'s readiness route"
    )
    if stack.options.wait_for_upstream:
        # the public health route answers only once this hop's upstream is healthy
        wait_until(
            lambda: send(port, "GET", "/health", timeout=2).status == 200,
            f"/health through {name}",
        )


def _stop_processes(stack: GatewayStack) -> None:
    for process in reversed(stack.processes.values()):
        process.stop()


@contextlib.contextmanager
def gateway_stack_running(workdir: Path, options: StackOptions) -> Iterator[GatewayStack]:
    names = [
        *ENTRY_POINTS, *(f"{n}_admin" for n in ENTRY_POINTS), "plant_internal",
        "backend", "authz", "metrics", "admin", "shipper",
    ]  # fmt: skip
    stack = GatewayStack(
        workdir=workdir,
        options=options,
        config_path=workdir / "gateway.yaml",
        out_dir=workdir / "build",
        ports={name: free_port() for name in names},
    )
    stack.rerender()
    with contextlib.ExitStack() as exits:
        exits.callback(_stop_processes, stack)
        _start_backend(stack)
        if options.with_authz:
            _start_authz(stack)
        _start_envoys(stack, exits)
        if options.shipper_env is not None:
            start_shipper(stack)
        yield stack


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
) -> Iterator[GatewayStack]:
    options = dataclasses.replace(gateway_stack_options, transport=authz_transport)
    with gateway_stack_running(tmp_path_factory.mktemp("stack"), options) as stack:
        yield stack


@pytest.fixture
def gateway_stack_factory(
    tmp_path: Path, authz_transport: str
) -> Iterator[Callable[[StackOptions], GatewayStack]]:
    """Start stacks of a test's own (over the module's transport); all stop when it ends."""
    with contextlib.ExitStack() as exits:
        started: list[GatewayStack] = []

        def start(options: StackOptions) -> GatewayStack:
            workdir = tmp_path / f"stack{len(started)}"
            workdir.mkdir()
            options = dataclasses.replace(options, transport=authz_transport)
            started.append(exits.enter_context(gateway_stack_running(workdir, options)))
            return started[-1]

        yield start


@pytest.fixture(scope="session")
def gateway_stack_types() -> tuple[type[StackOptions], type[GatewayStack]]:
    return StackOptions, GatewayStack
