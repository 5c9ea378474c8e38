"""Behind a trusted load balancer, the client its x-forwarded-for names is the one the gateway
vouches for (`entry_points.<name>.xff_trusted_hops`); without one, a client's entries count for
nothing (tests/e2e/test_backend_headers.py). Hostile pass 2026-11-30: x-forwarded-for reaching
the backend is now that one address, so deployments behind a proxy say how many to trust.
"""

from __future__ import annotations

import pytest

from gateway_config import deep_merge
from tests.e2e._gateway_stack import TEST_BUDGETS, GatewayStack, StackOptions

CLIENT = "203.0.113.9"


@pytest.fixture(scope="module")
def gateway_stack_options() -> StackOptions:
    # CP sits behind one trusted proxy; PLANT's public listener behind none
    behind_a_proxy = {"entry_points": {"cp": {"xff_trusted_hops": 1}}}
    return StackOptions(config_overrides=deep_merge(dict(TEST_BUDGETS), behind_a_proxy))


def _echoed(stack: GatewayStack, entry: str, forwarded_for: str) -> dict[str, str]:
    token = stack.sign_token(roles=("admin", "customer"))
    reply = stack.request(
        entry, "GET", "/api/v1/me", token=token, headers={"x-forwarded-for": forwarded_for}
    )
    assert reply.status == 200, reply.body[:300]
    return {k.lower(): v for k, v in reply.json()["headers"].items()}


def test_behind_a_trusted_proxy_the_client_it_names_is_vouched_for(
    gateway_stack: GatewayStack,
) -> None:
    echoed = _echoed(gateway_stack, "cp", f"198.51.100.1, {CLIENT}")  # the client's own, then
    assert echoed["x-forwarded-for"] == echoed["x-client-ip"] == CLIENT  # what the proxy saw


@pytest.mark.parametrize("entry", ["plant", "pp"])
def test_without_a_trusted_proxy_the_clients_entries_count_for_nothing(
    gateway_stack: GatewayStack, entry: str
) -> None:
    echoed = _echoed(gateway_stack, entry, CLIENT)
    assert echoed["x-forwarded-for"] == echoed["x-client-ip"] == "127.0.0.1"
