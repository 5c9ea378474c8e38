"""Shared fixtures: real PostgreSQL, Redis, OPA and Envoy via the devstack provisioning layer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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

REPO_ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = REPO_ROOT / "policies"
EnvoyFactory = Callable[[Path, str], EnvoyService]


def pytest_report_header(config: pytest.Config) -> str:
    provider = os.environ.get("GATEWAY_PROVIDER", "auto")
    return f"devstack provider: GATEWAY_PROVIDER={provider}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by tier folder; run `containers` tests only with GATEWAY_PROVIDER=containers."""
    forced = os.environ.get("GATEWAY_PROVIDER", "").lower() == "containers"
    kept, deselected = [], []
    for item in items:
        parts = item.path.parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("containers") and not forced:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@contextlib.contextmanager
def _required() -> Iterator[None]:
    """A missing service fails the test loudly with the install hint; never a skip."""
    try:
        yield
    except ServiceUnavailable as error:
        pytest.fail(f"required service unavailable: {error}", pytrace=False)


@pytest.fixture(scope="session")
def devstack_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def postgres(devstack_workdir: Path) -> Iterator[PostgresService]:
    """PostgreSQL for the session; tests that stop() it must start() it again."""
    with _required(), provision_postgres(devstack_workdir, fsync=False) as service:
        yield service


@pytest.fixture(scope="session")
def redis_service(devstack_workdir: Path) -> Iterator[RedisService]:
    with _required(), provision_redis(devstack_workdir) as service:
        yield service


@pytest.fixture(scope="session")
def opa_service(devstack_workdir: Path) -> Iterator[OpaService]:
    """OPA loading policies/ when it holds Rego files, else empty."""
    policies = POLICY_DIR if any(POLICY_DIR.glob("**/*.rego")) else None
    with _required(), provision_opa(devstack_workdir, policies) as service:
        yield service


@pytest.fixture(autouse=True)
def _restart_stopped_services(request: pytest.FixtureRequest) -> None:
    """A test that stopped a session service and then failed must not sink the tests after it."""
    for name in ("postgres", "redis_service", "opa_service"):
        if name in request.fixturenames:
            service = request.getfixturevalue(name)
            if not service.running:
                service.start()


@pytest.fixture
def envoy_factory(tmp_path: Path) -> Iterator[EnvoyFactory]:
    """Start Envoys: `envoy_factory(config_path, name)`; all stop when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(config_path: Path, name: str) -> EnvoyService:
            with _required():
                return stack.enter_context(provision_envoy(tmp_path, config_path, name=name))
            raise AssertionError("unreachable")  # pytest.fail raised above

        yield start
