"""Through the real Envoy, over both transports: the route's facts are the gateway's, never
the client's. A client naming the facts header (or any x-authz-* header) changes nothing."""

from __future__ import annotations

import pytest

from gateway_contract.headers import PEER_HEADER, ROUTE_FACTS_HEADER
from gateway_contract.route_facts import RouteFacts
from tests.e2e._gateway_stack import GatewayStack

# what a client would claim to reach the admin route with a customer's token
FORGED_FACTS = RouteFacts(
    gateway_type="PLANT", route_id="orders-list", permission="orders:read"
).to_route_metadata()


@pytest.mark.parametrize("entry", ["plant", "pp"])
def test_forged_route_facts_do_not_change_the_decision(
    gateway_stack: GatewayStack, entry: str
) -> None:
    customer = gateway_stack.sign_token(roles=("customer",))
    forged = {ROUTE_FACTS_HEADER: FORGED_FACTS, PEER_HEADER: "203.0.113.250"}
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/admin/users", token=customer, headers=forged
    )
    assert reply.status == 403
    assert reply.content_type == "application/problem+json"
    assert reply.json()["code"] == "permission_denied"
    assert reply.headers["x-correlation-id"] == reply.json()["correlation_id"]


def test_only_identity_headers_of_the_answer_reach_the_backend(gateway_stack: GatewayStack) -> None:
    """The decision header (for Envoy's access log) and Envoy's own check headers stay
    between Envoy and the service."""
    token = gateway_stack.sign_token(roles=("customer",))
    reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
    assert reply.status == 200
    seen = {k.lower() for k in reply.json()["headers"]}
    assert {"x-authz-decision", PEER_HEADER, ROUTE_FACTS_HEADER}.isdisjoint(seen)
    assert "x-authz-decision-id" in seen
