"""Envoy answers problem+json when the backend or the authz service is unreachable (fail closed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e._gateway_stack import GatewayStack, StackOptions
from tests.support.free_ports import free_port

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def stack_without_backend_and_authz(
    gateway_stack_factory: Callable[[StackOptions], GatewayStack],
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]],
) -> GatewayStack:
    options_type, _ = gateway_stack_types
    dead_port = free_port()  # a port nobody listens on
    options = options_type(
        with_authz=False,
        entry_points=("plant", "cp"),
        config_overrides={"upstreams": {"backend": {"port": dead_port}}},
        wait_for_upstream=False,
    )
    return gateway_stack_factory(options)


def test_unreachable_backend_and_authz_service(
    stack_without_backend_and_authz: GatewayStack,
) -> None:
    stack = stack_without_backend_and_authz
    public = stack.request("plant", "GET", "/health")
    assert public.status == 503
    assert public.content_type == PROBLEM_JSON
    problem = public.json()
    assert problem["type"] == "https://gateway.example/problems/upstream_unavailable"
    assert problem["correlation_id"] == public.headers["x-correlation-id"]

    # fail closed: with the authz service down nothing protected gets through, on any hop
    token = "irrelevant"
    for entry in ("plant", "cp"):
        reply = stack.request(entry, "GET", "/api/v1/orders", headers={"authorization": token})
        assert reply.status == 503
        assert reply.content_type == PROBLEM_JSON
        assert reply.json()["type"] == "https://gateway.example/problems/authz_unavailable"
