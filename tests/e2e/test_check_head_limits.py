"""Whatever head Envoy admits, the authz service decides on it, over either transport.

Hostile pass 2026-11-30: a 40 KB User-Agent (Envoy admits 60 KiB of headers) was answered
over the HTTP transport by the service's own 431, with no decision in the audit row and no
correlation id in the body, while the gRPC transport decided it. The service now takes every
check head Envoy can send (runtime.json's max_check_head_bytes; it refuses to start below it).
"""

from __future__ import annotations

import pytest

from tests.e2e._gateway_stack import GatewayStack

PROBLEMS = "https://gateway.example/problems/"


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
@pytest.mark.parametrize("header", ["user-agent", "content-type"])  # sent with every check
@pytest.mark.parametrize("size_kb", [20, 40, 56])  # up to Envoy's 60 KiB of headers
def test_a_big_head_envoy_admits_gets_the_services_decision(
    gateway_stack: GatewayStack, entry: str, header: str, size_kb: int
) -> None:
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/orders", headers={header: "u" * (size_kb * 1024)}
    )
    assert reply.status == 401, reply.body[:300]
    problem = reply.json()
    assert problem["type"] == PROBLEMS + "token_missing"
    assert problem["correlation_id"] == reply.headers["x-correlation-id"]
