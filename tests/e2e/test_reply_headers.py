"""What every reply's headers tell a client (hostile pass 2026-11-30).

No reply names the proxy the gateway runs on (`server: envoy`) or the upstream's server; no
problem the gateway makes (Envoy's own replies, the Lua filter's refusals, the service's
denials) may be stored by a cache and served to another client: each names one request.
"""

from __future__ import annotations

import pytest

from tests.e2e._gateway_stack import GatewayStack, Reply

# (what, method, path, with token, status): one of each kind of reply the gateway makes
REPLIES = [
    ("no route", "GET", "/nowhere", False, 404),
    ("escaped slash", "GET", "/api%2Fv1/orders", False, 400),
    ("unrouted method", "TRACE", "/api/v1/orders", False, 501),
    ("target too long", "GET", "/api/v1/orders?" + "q" * 5000, False, 414),
    ("authz denial", "GET", "/api/v1/orders", False, 401),
]


def _send(stack: GatewayStack, entry: str, method: str, path: str, token: bool) -> Reply:
    signed = stack.sign_token(roles=("admin", "customer")) if token else None
    return stack.request(entry, method, path, token=signed)


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
@pytest.mark.parametrize(("what", "method", "path", "token", "status"), REPLIES)
def test_a_gateway_problem_is_never_cached_nor_names_the_proxy(
    gateway_stack: GatewayStack, entry: str, what: str, method: str, path: str, token: bool,
    status: int,
) -> None:  # fmt: skip
    reply = _send(gateway_stack, entry, method, path, token)
    assert reply.status == status, (what, reply.body[:200])
    assert reply.content_type == "application/problem+json"
    assert reply.headers.get_all("cache-control") == ["no-store"], what
    assert reply.headers.get_all("server") == ["gateway"], what


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
def test_an_upstream_reply_names_the_gateway_not_the_proxy_or_the_upstream(
    gateway_stack: GatewayStack, entry: str
) -> None:
    reply = _send(gateway_stack, entry, "GET", "/api/v1/orders", True)
    assert reply.status == 200, reply.body[:200]
    assert reply.headers.get_all("server") == ["gateway"]
