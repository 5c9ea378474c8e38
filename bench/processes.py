"""Starts the bench's own processes: authz workers and shippers (devstack.parts, as make up
builds them), the OPA-Envoy server, the calibration servers, front Envoys."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.envoy_configs import FrontSpec, render_front
from bench.keys import AUDIENCE, ISSUER, BenchIssuer
from devstack.free_ports import free_port
from devstack.parts import authz_process, shipper_process
from devstack.probes import http_get
from devstack.process import ManagedProcess
from devstack.provision import Provisioned
from devstack.services import provision_envoy

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def render(workdir: Path) -> tuple[Path, dict[str, Any]]:
    out = workdir / "render"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "render.py"),
            "--config",
            str(BENCH / "gateway.yaml"),
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    runtime = json.loads((out / "authz" / "runtime.json").read_text())
    return out, runtime


@dataclass
class Workers:
    endpoints: list[str]
    pids: list[int]
    metrics_urls: list[str]  # Prometheus endpoints (the real service only)


def authz_workers(
    exits: contextlib.ExitStack,
    name: str,
    env: dict[str, str],
    workers: int,
    transport: str,
    home: Path,
    module: tuple[str, ...] = ("authz_service", "serve"),
) -> Workers:
    """N processes, one address each; Envoy balances them (LEAST_REQUEST)."""
    started = Workers([], [], [])
    real = module[0] == "authz_service"
    for index in range(workers):
        if transport == "uds":
            address = f"unix:{home / f'{name}-{index}.sock'}"
        else:
            address = f"127.0.0.1:{free_port()}"
        metrics = f"127.0.0.1:{free_port()}" if real else ""
        worker_env = {
            **env,
            "AUTHZ_AUDIT_JOURNAL_DIR": str(home / f"{name}-journal"),  # one dir per worker in it
            "AUTHZ_METRICS_ADDRESS": metrics,
            "AUTHZ_ADMIN_ADDRESS": "",  # several workers: the admin port is off
            "AUTHZ_LOG_LEVEL": "WARNING",
        }
        process = authz_process(
            address,
            "grpc",
            worker_env,
            home / f"{name}-{index}.log",
            name=f"authz {name}-{index}",
            argv=(*module, *([] if real else [address])),
        )
        process.start()
        exits.callback(process.stop)
        assert process.pid is not None
        started.pids.append(process.pid)
        started.endpoints.append(address)
        if metrics:
            started.metrics_urls.append(f"http://{metrics}/metrics")
    return started


def shipper(
    exits: contextlib.ExitStack, name: str, database: Provisioned, home: Path, log: Path | None
) -> tuple[int, str]:
    """`python -m authz_service audit ship` for one variant's journals and Envoy log; its PID
    and its /health URL."""
    manifest = home / f"{name}-access-logs.json"
    entries = [] if log is None else [
        {"name": name, "gateway_type": "PLANT", "path": str(log), "admin": None}]  # fmt: skip
    manifest.write_text(json.dumps({"access_logs": entries}))
    health = f"127.0.0.1:{free_port()}"
    env = {
        "AUTHZ_SHIPPER_DATABASE_URL": database.shipper_dsn,
        "AUTHZ_SHIPPER_JOURNAL_DIR": str(home / f"{name}-journal"),
        "AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST": str(manifest),
        "AUTHZ_SHIPPER_LOG_LEVEL": "WARNING",
    }
    process = shipper_process(
        health, env, home / f"shipper-{name}.log", name=f"shipper {name}", healthy=True
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    return process.pid, f"http://{health}/health"


def opa_envoy(
    exits: contextlib.ExitStack, home: Path, issuer: BenchIssuer, runtime: Any
) -> tuple[str, int]:
    """The real OPA-Envoy plugin (tools/build-opa-envoy.sh) on `opa_envoy/policy.rego`, with
    its data (issuer, audience, JWKS, RBAC) as a data file; its ext_authz gRPC on a socket."""
    policy_dir = home / "opa-envoy-policy"
    policy_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "opa_envoy" / "policy.rego", policy_dir / "policy.rego")
    data = {
        "bench": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_json": issuer.jwks_json,
            "rbac": runtime["rbac"],
        }
    }
    (policy_dir / "data.json").write_text(json.dumps(data))
    path = home / "opa-envoy.sock"
    api = f"127.0.0.1:{free_port()}"
    argv = [
        str(REPO / ".cache" / "bin" / "opa-envoy-plugin"),
        "run",
        "--server",
        "--addr",
        api,
        "--log-level",
        "error",
        "--set",
        f"plugins.envoy_ext_authz_grpc.addr=unix://{path}",
        "--set",
        "plugins.envoy_ext_authz_grpc.path=envoy/authz/allow",
        str(policy_dir / "policy.rego"),
        str(policy_dir / "data.json"),
    ]
    process = ManagedProcess(
        "opa-envoy-plugin",
        argv,
        log_path=home / "opa-envoy.log",
        # OPA's health with its plugins: ready once the ext_authz server is up
        ready=lambda: http_get(f"http://{api}/health?plugins")[0] == 200 and _accepts(path),
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    return f"unix:{path}", process.pid


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def http_noop(exits: contextlib.ExitStack, home: Path, workers: int) -> tuple[str, list[int]]:
    """(0b): `workers` bare HTTP allow-all processes sharing one port (SO_REUSEPORT)."""
    address = f"127.0.0.1:{free_port()}"
    pids = []
    for index in range(workers):
        process = ManagedProcess(
            f"http-noop-{index}",
            [sys.executable, "-m", "bench.noop_http_authz", address],
            log_path=home / f"http-noop-{index}.log",
            ready=lambda: http_get(f"http://{address}/health")[0] == 200,
        )
        process.start()
        exits.callback(process.stop)
        assert process.pid is not None
        pids.append(process.pid)
    return address, pids


def authz_http(
    exits: contextlib.ExitStack, name: str, env: dict[str, str], workers: int, home: Path
) -> Workers:
    """(2c): `python -m authz_service serve` over HTTP with AUTHZ_WORKERS=N: one supervisor,
    N workers on one port; worker i's metrics on the metrics port + i."""
    address = f"127.0.0.1:{free_port()}"
    metrics_port = _free_ports(workers)
    worker_env = {
        **env,
        "AUTHZ_WORKERS": str(workers),
        "AUTHZ_AUDIT_JOURNAL_DIR": str(home / f"{name}-journal"),
        "AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "AUTHZ_ADMIN_ADDRESS": "",
        "AUTHZ_LOG_LEVEL": "WARNING",
    }
    process = authz_process(
        address,
        "http",
        worker_env,
        home / f"{name}.log",
        name=f"authz {name}",
        ready=lambda: _all_workers_serve(address, metrics_port, workers),
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(workers)]
    return Workers([address], [process.pid], urls)


def _free_ports(count: int) -> int:
    """A first port with `count` free ports from it (worker metrics ports are consecutive)."""
    for _ in range(100):
        first = free_port()
        if all(_port_free(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _all_workers_serve(address: str, metrics_port: int, workers: int) -> bool:
    if http_get(f"http://{address}/health")[0] != 200:
        return False
    return all(
        http_get(f"http://127.0.0.1:{metrics_port + i}/metrics")[0] == 200 for i in range(workers)
    )


def front(
    exits: contextlib.ExitStack,
    home: Path,
    spec: FrontSpec,
    backend_port: int,
    route: Any,
    concurrency: int,
) -> int:
    config = render_front(
        home / f"front-{spec.name}.yaml", spec, backend_port=backend_port, route=route
    )
    envoy = exits.enter_context(
        provision_envoy(
            home, config, name=f"front-{spec.name}", concurrency=concurrency, provider="local"
        )
    )
    assert envoy.pid is not None
    return envoy.pid
