"""What the backend hears is the gateway's word, never a client's claim (hostile pass 2026-11-30).

Through each entry point and over each transport: a client's claims about the request (its
address, the host, port or prefix it used, another method or target: CLIENT_CLAIM_HEADERS)
never reach the backend; x-forwarded-for is the one address the gateway vouches for; the
client's bearer token stops at the gateway; and Host is the upstream's own authority, whatever
Host or absolute-URI authority the client sent (`upstreams.<name>.forward_authorization` and
`preserve_host` turn the last two off: tests/unit/test_render_upstream_headers.py).
"""

from __future__ import annotations

import pytest

from gateway_contract.headers import CLIENT_CLAIM_HEADERS
from tests.e2e._gateway_stack import GatewayStack, Reply

ENTRY_POINTS = ("plant", "cp", "pp")
FORGED = "203.0.113.66"
# a value each claim header could carry, all recognisable in the backend's echo
CLAIMS: dict[str, str] = {
    **{name: FORGED for name in CLIENT_CLAIM_HEADERS},
    "forwarded": f"for={FORGED};host=evil.example;proto=https",
    "x-forwarded-host": "evil.example",
    "x-original-host": "evil.example",
    "x-forwarded-port": "forged-port",
    "x-forwarded-prefix": "/api/v1/admin",
    "x-original-url": "/api/v1/admin",
    "x-rewrite-url": "/api/v1/admin",
    "x-http-method-override": "DELETE",
    "x-http-method": "DELETE",
    "x-method-override": "DELETE",
    "x-original-method": "DELETE",
}


def _token(stack: GatewayStack) -> str:
    # PP grants its routes to admins only; CP to customers
    return stack.sign_token(sub="hygiene", roles=("admin", "customer"), customer_id="c-hygiene")


def _echoed(reply: Reply) -> dict[str, str]:
    assert reply.status == 200, reply.body[:300]
    return {k.lower(): v for k, v in reply.json()["headers"].items()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("header", sorted(CLAIMS))
def test_no_clients_claim_about_the_request_reaches_the_backend(
    gateway_stack: GatewayStack, entry: str, header: str
) -> None:
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/me", token=_token(gateway_stack), headers={header: CLAIMS[header]}
    )
    echoed = _echoed(reply)
    assert header not in echoed
    assert not [value for value in echoed.values() if CLAIMS[header] in value]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_backends_forwarded_for_is_the_one_address_the_gateway_vouches_for(
    gateway_stack: GatewayStack, entry: str
) -> None:
    reply = gateway_stack.request(
        entry, "GET", "/api/v1/me", token=_token(gateway_stack),
        headers={"x-forwarded-for": f"{FORGED}, 198.51.100.7"},
    )  # fmt: skip
    echoed = _echoed(reply)
    assert echoed["x-forwarded-for"] == echoed["x-client-ip"] == "127.0.0.1"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("route", ["/api/v1/me", "/api/v1/status"])  # checked, public
def test_the_clients_bearer_token_stops_at_the_gateway(
    gateway_stack: GatewayStack, entry: str, route: str
) -> None:
    token = _token(gateway_stack)
    echoed = _echoed(gateway_stack.request(entry, "GET", route, token=token))
    assert "authorization" not in echoed
    assert not [value for value in echoed.values() if token in value]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("target", "host"),
    [("/api/v1/me", "evil.example"), ("http://evil.example/api/v1/me", "gw.example")],
)
def test_the_backend_gets_its_own_host_not_the_clients(
    gateway_stack: GatewayStack, entry: str, target: str, host: str
) -> None:
    reply = gateway_stack.request(
        entry, "GET", target, token=_token(gateway_stack), headers={"host": host}
    )
    assert _echoed(reply)["host"] == f"127.0.0.1:{gateway_stack.port('backend')}"
