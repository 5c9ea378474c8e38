"""The gateway's own processes (backend, authz service, audit shipper), built one way for all.

`devstack.launcher` starts them for `make up` and the e2e tests; the bench starts its authz
workers and shippers with the same builders. Each is a `ManagedProcess`: started, ready-checked,
restarted on the same ports and settings, stopped by PID.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from authz_service import health_probe
from devstack.free_ports import LOOPBACK
from devstack.probes import grpc_health_answers, http_answers, http_get
from devstack.process import ManagedProcess

Transport = Literal["grpc", "http"]


def backend_process(port: int, log_path: Path, env: Mapping[str, str]) -> ManagedProcess:
    """The reference backend on 127.0.0.1:`port`; ready once its /health answers 200, alive
    while /livez does (/health asks PostgreSQL: a hung database must not condemn the backend)."""
    health = f"http://{LOOPBACK}:{port}/health"
    livez = f"http://{LOOPBACK}:{port}/livez"
    return ManagedProcess(
        "backend",
        [sys.executable, "-m", "backend", "--host", LOOPBACK, "--port", str(port)],
        log_path=log_path,
        ready=lambda: http_get(health)[0] == 200,
        alive=lambda: http_get(livez)[0] == 200,
        env={**os.environ, **env},
    )


def authz_ready(address: str, transport: Transport) -> Callable[[], bool]:
    """Serving: grpc.health.v1 SERVING, or GET /health 200 on the HTTP transport."""
    if transport == "http":
        return lambda: http_get(f"http://{address}/health")[0] == 200
    return lambda: health_probe.serving(address)


def authz_alive(address: str, transport: Transport) -> Callable[[], bool]:
    """Its health answers at all, SERVING or not: NOT_SERVING says Redis, OPA or the journal is
    away, and a restart for that would adopt a new budget ledger (docs/ARCHITECTURE.md)."""
    if transport == "http":
        return lambda: http_answers(f"http://{address}/health")
    return lambda: grpc_health_answers(address)


def authz_process(
    address: str,
    transport: Transport,
    env: Mapping[str, str],
    log_path: Path,
    *,
    name: str = "authz",
    ready: Callable[[], bool] | None = None,
    argv: tuple[str, ...] = ("authz_service", "serve"),
) -> ManagedProcess:
    """`python -m authz_service serve` answering checks on `address` over `transport`.

    `env` holds the other AUTHZ_* settings (it wins over the transport's two addresses);
    `argv` is another module for the bench's calibration servers."""
    http = transport == "http"
    full = {
        **os.environ,
        "AUTHZ_GRPC_ADDRESS": "" if http else address,
        "AUTHZ_HTTP_ADDRESS": address if http else "",
        **env,
    }
    return ManagedProcess(
        name,
        [sys.executable, "-m", *argv],
        log_path=log_path,
        ready=ready or authz_ready(address, transport),
        alive=authz_alive(address, transport),
        env=full,
    )


def shipper_process(
    health_address: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    name: str = "shipper",
    healthy: bool = False,
) -> ManagedProcess:
    """`python -m authz_service audit ship`; ready once its /health answers at all (a 503
    while PostgreSQL is away is an answer), or answers 200 when `healthy`; alive while it
    answers at all (its aiohttp server runs on the shipper's event loop)."""
    url = f"http://{health_address}/health"

    def ready() -> bool:
        status = http_get(url)[0]
        return status == 200 if healthy else status != 0

    return ManagedProcess(
        name,
        [sys.executable, "-m", "authz_service", "audit", "ship"],
        log_path=log_path,
        ready=ready,
        alive=lambda: http_answers(url),
        env={**os.environ, "AUTHZ_SHIPPER_HEALTH_ADDRESS": health_address, **env},
    )
