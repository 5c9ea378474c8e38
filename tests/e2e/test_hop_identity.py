"""Only a hop can say which request caused this one (issue 13, finding 6).

CP and PP forward to PLANT's internal listener, which only hops reach (loopback here, the
compose network in compose). A client calling any public listener, PLANT's included, cannot
set x-causation-id, an identity header, or a header Envoy keeps for its own hops.
"""

from __future__ import annotations

import uuid

import pytest

from gateway_contract.headers import IDENTITY_HEADERS
from tests.e2e._gateway_stack import GatewayStack, Reply

FORGED_CAUSATION = str(uuid.uuid4())
# What only a hop (or Envoy itself) may set, with a client's forgery of each
HOP_ONLY: dict[str, str] = {
    "x-causation-id": FORGED_CAUSATION,
    "x-request-id": str(uuid.uuid4()),
    "x-envoy-internal": "true",
    "x-envoy-original-path": "/api/v1/admin",
    "x-envoy-decorator-operation": "forged",
    "x-envoy-downstream-service-cluster": "forged",
    "x-envoy-downstream-service-node": "forged",
    "x-envoy-expected-rq-timeout-ms": "1",
    "x-envoy-external-address": "203.0.113.66",
    "x-envoy-attempt-count": "9",
    "x-forwarded-proto": "gopher",
    "x-client-ip": "203.0.113.77",  # the address Envoy vouches for (the audit row's client_ip)
    # the authz service's namespace: its decision and the HTTP transport's facts and peer
    "x-authz-decision": "allow",
    "x-authz-route": "permission=&policy=",
    "x-authz-peer": "203.0.113.88",
    "x-authz-anything-new": "forged",
    **{name: "forged" for name in IDENTITY_HEADERS if name != "x-correlation-id"},
}


def _echoed(reply: Reply) -> dict[str, str]:
    assert reply.status == 200, reply.body[:300]
    return {k.lower(): v for k, v in reply.json()["headers"].items()}


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
@pytest.mark.parametrize("header", sorted(HOP_ONLY))
def test_no_public_listener_passes_a_clients_hop_only_header(
    gateway_stack: GatewayStack, entry: str, header: str
) -> None:
    token = gateway_stack.sign_token(sub="root", roles=("admin", "customer"), customer_id="c-1")
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/me", token=token, headers={header: HOP_ONLY[header]}
    )
    echoed = _echoed(reply)
    assert echoed.get(header) != HOP_ONLY[header]
    assert HOP_ONLY[header] not in echoed.values()


def test_plant_direct_has_no_causation_and_a_hop_sets_its_own(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("customer",))
    forged = {"x-causation-id": FORGED_CAUSATION}
    direct = _echoed(
        gateway_stack.request("plant", "GET", "/api/v1/me", token=token, headers=forged)
    )
    assert "x-causation-id" not in direct
    via_cp = gateway_stack.request("cp", "GET", "/api/v1/me", token=token, headers=forged)
    assert _echoed(via_cp)["x-causation-id"] == via_cp.headers["x-request-id"]


def test_the_internal_listener_keeps_the_causation_id_a_hop_sets(
    gateway_stack: GatewayStack,
) -> None:
    """What CP/PP do: the hop's own request id reaches the backend as the causation id."""
    token = gateway_stack.sign_token(roles=("customer",))
    hop_request_id = str(uuid.uuid4())
    reply = gateway_stack.request(
        "plant_internal", "GET", "/api/v1/me", token=token,
        headers={"x-causation-id": hop_request_id},
    )  # fmt: skip
    echoed = _echoed(reply)
    assert echoed["x-causation-id"] == hop_request_id
    assert echoed["x-user-id"] == "user-1"  # checked like any request: the same routes and authz


def test_a_client_cannot_stretch_the_upstream_timeout(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("viewer",))
    headers = {"x-envoy-upstream-rq-timeout-ms": "60000", "x-envoy-max-retries": "5"}
    reply = gateway_stack.request("plant", "GET", "/api/v1/slow?ms=3000", token=token,
                                  headers=headers)  # fmt: skip
    assert reply.status == 504  # the route's 400 ms, not the client's minute
