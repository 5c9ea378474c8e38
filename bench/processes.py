"""Starts the bench's own processes: authz workers, the OPA-Envoy server, front Envoys."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_service import health_probe
from bench.envoy_configs import FrontSpec, render_front
from bench.keys import AUDIENCE, ISSUER, BenchIssuer
from devstack.model import PostgresService
from devstack.ports import free_port, http_get
from devstack.process import ManagedProcess
from devstack.provision import Provisioned, provision
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


def migrate(pg: PostgresService, workdir: Path) -> Provisioned:
    """Provision the database (its logins) as the superuser, migrate as the migrations login."""
    database = provision(pg.dsn_for("postgres"), pg.database)
    with (workdir / "migrate.log").open("wb") as log:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=REPO,
            env={**os.environ, "AUTHZ_DATABASE_URL": database.migrator_dsn},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return database


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
            **os.environ,
            **env,
            "AUTHZ_GRPC_ADDRESS": address,
            "AUTHZ_AUDIT_JOURNAL_DIR": str(home / f"{name}-journal"),  # one dir per worker in it
            "AUTHZ_METRICS_ADDRESS": metrics,
            "AUTHZ_ADMIN_ADDRESS": "",  # several workers: the admin port is off
            "AUTHZ_LOG_LEVEL": "WARNING",
        }
        process = ManagedProcess(
            f"authz {name}-{index}",
            [sys.executable, "-m", *module, *([] if real else [address])],
            log_path=home / f"{name}-{index}.log",
            ready=lambda a=address: health_probe.serving(a),  # type: ignore[misc]
            env=worker_env,
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
        **os.environ,
        "AUTHZ_SHIPPER_DATABASE_URL": database.shipper_dsn,
        "AUTHZ_SHIPPER_JOURNAL_DIR": str(home / f"{name}-journal"),
        "AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST": str(manifest),
        "AUTHZ_SHIPPER_HEALTH_ADDRESS": health,
        "AUTHZ_SHIPPER_LOG_LEVEL": "WARNING",
    }
    process = ManagedProcess(
        f"shipper {name}",
        [sys.executable, "-m", "authz_service", "audit", "ship"],
        log_path=home / f"shipper-{name}.log",
        ready=lambda: http_get(f"http://{health}/health")[0] == 200,
        env=env,
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    return process.pid, f"http://{health}/health"


def opa_envoy(
    exits: contextlib.ExitStack, home: Path, issuer: BenchIssuer, runtime: Any
) -> tuple[str, int]:
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
    address = f"unix:{path}"
    process = ManagedProcess(
        "opa-envoy",
        [str(REPO / ".cache" / "bin" / "opa-envoy"), "-addr", address, "-policy", str(policy_dir)],
        log_path=home / "opa-envoy.log",
        ready=lambda: _accepts(path),
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    return address, process.pid


def _accepts(path: Path) -> bool:
    """opa-envoy has no health service: ready once its socket accepts a connection."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


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
