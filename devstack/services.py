"""The provisioning API: PostgreSQL, Redis, OPA and Envoy for tests and `make up`.

The provider comes from GATEWAY_PROVIDER=auto|local|containers (auto: containers when a
Docker-compatible engine answers and already holds the image, else local processes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Literal

from devstack import engine, local
from devstack.model import (
    EnvoyService,
    OpaService,
    PostgresService,
    RedisService,
    ServiceUnavailable,
)

Provider = Literal["local", "containers"]
PROVIDER_ENV = "GATEWAY_PROVIDER"

IMAGE_DEFAULTS = {
    "POSTGRES_IMAGE": "postgres:15",
    "REDIS_IMAGE": "redis:7",
    "OPA_IMAGE": "openpolicyagent/opa:1.22.2",
    "ENVOY_IMAGE": "envoyproxy/envoy:v1.40-latest",
}


def image_for(variable: str) -> str:
    """The container image for a service: $POSTGRES_IMAGE etc., else the official default."""
    return os.environ.get(variable) or IMAGE_DEFAULTS[variable]


def _containers() -> ModuleType:
    """The containers provider, imported on first use (testcontainers is a dev dependency)."""
    from devstack import containers  # noqa: PLC0415

    return containers


def choose_provider(image_variable: str, requested: str | None = None) -> Provider:
    """Resolve GATEWAY_PROVIDER (or `requested`) for the service imaged by `image_variable`."""
    mode = (requested or os.environ.get(PROVIDER_ENV) or "auto").strip().lower()
    if mode == "local":
        return "local"
    if mode not in ("auto", "containers"):
        raise ServiceUnavailable(f"{PROVIDER_ENV}={mode!r} is not one of auto, local, containers")
    if mode == "containers":
        engine.require_engine()
        return "containers"
    if engine.engine_answers() and engine.image_present(image_for(image_variable)):
        return "containers"
    return "local"


@contextlib.contextmanager
def provision_postgres(
    workdir: Path, *, fsync: bool = True, provider: str | None = None
) -> Iterator[PostgresService]:
    """PostgreSQL, database "gateway", superuser "postgres"; pg_cron preloaded when installed."""
    if choose_provider("POSTGRES_IMAGE", provider) == "local":
        with local.postgres(workdir, fsync=fsync) as service:
            yield service
        return
    with _containers().postgres(workdir, image_for("POSTGRES_IMAGE"), fsync=fsync) as service:
        yield service


@contextlib.contextmanager
def provision_redis(workdir: Path, *, provider: str | None = None) -> Iterator[RedisService]:
    """Redis without persistence; `.url` is redis://127.0.0.1:PORT/0."""
    if choose_provider("REDIS_IMAGE", provider) == "local":
        with local.redis_server(workdir) as service:
            yield service
        return
    with _containers().redis_server(workdir, image_for("REDIS_IMAGE")) as service:
        yield service


@contextlib.contextmanager
def provision_opa(
    workdir: Path, policy_dir: Path | None, *, provider: str | None = None
) -> Iterator[OpaService]:
    """An OPA server loading `policy_dir` (none: empty); ready once GET /health answers 200."""
    if choose_provider("OPA_IMAGE", provider) == "local":
        with local.opa(workdir, policy_dir) as service:
            yield service
        return
    with _containers().opa(workdir, policy_dir, image_for("OPA_IMAGE")) as service:
        yield service


@contextlib.contextmanager
def provision_envoy(
    workdir: Path,
    config_path: Path,
    *,
    name: str,
    concurrency: int = 1,
    provider: str | None = None,
    log_dir: Path | None = None,
) -> Iterator[EnvoyService]:
    """Envoy running `config_path`; ready once admin /ready says LIVE. Several may run at once.

    `log_dir`: the directory the config's access logs go to (a container must mount it)."""
    if choose_provider("ENVOY_IMAGE", provider) == "local":
        with local.envoy(workdir, config_path, name=name, concurrency=concurrency) as service:
            yield service
        return
    with _containers().envoy(
        workdir, config_path, image_for("ENVOY_IMAGE"), name=name, concurrency=concurrency,
        log_dir=log_dir,
    ) as service:  # fmt: skip
        yield service


__all__ = [
    "EnvoyService",
    "OpaService",
    "PostgresService",
    "Provider",
    "RedisService",
    "ServiceUnavailable",
    "choose_provider",
    "image_for",
    "provision_envoy",
    "provision_opa",
    "provision_postgres",
    "provision_redis",
]
