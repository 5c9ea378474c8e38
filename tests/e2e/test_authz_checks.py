"""Through the real Envoys with the rendered configs: the original stack's validation list.

The authz service runs as `make up` runs it (the real OPA, budgets in Redis, the audit shipper
into PostgreSQL), on the default stack: it trusts tests/support's HS256 issuer plus an RS256
issuer (static PEM) and an inline-JWKS issuer for the key-confusion and unknown-kid cases, and
gives cust-tight a budget of 2 a day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from tests.e2e._gateway_stack import GatewayStack, Reply
from tests.support.issuers import AUDIENCE, ISSUER, JWKS_ISSUER, RS_ISSUER, SECRET, rsa_key

HS_ISSUER, HS_SECRET = ISSUER, SECRET
PRIVATE_PEM, PUBLIC_PEM = rsa_key().private_pem, rsa_key().public_pem
PROBLEM = "application/problem+json"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": HS_ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "roles": ["customer"],
        "customer_id": "cust-1",
        "iat": now,
        "nbf": now,
        # an hour: tables build their tokens at collection, minutes before they run
        "exp": now + 3600,
    }
    claims.update(overrides)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key() -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(iss=RS_ISSUER)).encode())
    mac = hmac.new(PUBLIC_PEM.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _assert_problem(reply: Reply, status: int, code: str, stage: str) -> dict[str, Any]:
    assert reply.status == status, reply.body[:500]
    assert reply.content_type == PROBLEM
    body: dict[str, Any] = reply.json()
    assert "resource" not in body  # the backend's echo: the request never reached it
    assert body["type"] == f"https://gateway.example/problems/{code}"
    assert (body["status"], body["code"], body["stage"]) == (status, code, stage)
    assert body["title"]
    assert body["detail"]
    assert body["instance"].startswith("/api/v1/")
    assert body["correlation_id"]
    return body


@pytest.mark.parametrize("entry", ["cp", "pp", "plant"])
def test_missing_jwt_is_401(gateway_stack: GatewayStack, entry: str) -> None:
    reply = gateway_stack.request(entry, "GET", "/api/v1/orders")
    body = _assert_problem(reply, 401, "token_missing", "authenticate")
    assert reply.headers["www-authenticate"] == 'Bearer realm="gateway"'
    assert reply.headers["x-correlation-id"] == body["correlation_id"]


def test_allowed_request_reaches_the_backend_with_identity(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(sub="user-1", roles=("customer",), customer_id="cust-1")
    correlation = "7f0c3d4e-1a2b-4c5d-8e9f-0a1b2c3d4e5f"
    reply = gateway_stack.request(
        "cp", "GET", "/api/v1/orders", token=token, headers={"x-correlation-id": correlation}
    )
    assert reply.status == 200, reply.body[:500]
    seen = reply.json()["headers"]
    seen = {k.lower(): v for k, v in seen.items()}
    assert seen["x-user-id"] == "user-1"
    assert seen["x-customer-id"] == "cust-1"
    assert seen["x-roles"] == "customer"
    assert seen["x-trial-mode"] == "false"
    assert seen["x-plan"] == "standard"
    assert seen["x-correlation-id"] == correlation
    assert int(seen["x-budget-remaining"]) > 0
    assert seen["x-authz-decision-id"]


def test_spoofed_identity_headers_are_replaced(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(sub="user-1", roles=("customer",), customer_id="cust-1")
    spoof = {
        "x-user-id": "admin",
        "x-roles": "admin",
        "x-customer-id": "cust-acme",
        "x-budget-remaining": "999999",
        "x-trial-mode": "false",
    }
    reply = gateway_stack.request("cp", "GET", "/api/v1/orders", token=token, headers=spoof)
    assert reply.status == 200
    seen = {k.lower(): v for k, v in reply.json()["headers"].items()}
    assert (seen["x-user-id"], seen["x-roles"], seen["x-customer-id"]) == (
        "user-1",
        "customer",
        "cust-1",
    )
    assert seen["x-budget-remaining"] != "999999"
    # without a token the spoofed identity gets nowhere
    _assert_problem(
        gateway_stack.request("pp", "GET", "/api/v1/orders", headers=spoof),
        401,
        "token_missing",
        "authenticate",
    )


def test_rbac_denial_names_the_permission(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("viewer",))
    reply = gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}")
    body = _assert_problem(reply, 403, "permission_denied", "authorize")
    assert body["permission"] == "orders:write"
    assert "orders:write" in body["detail"]


def test_ended_trial_is_403(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(
        plan="trial", trial_mode=True, trial_ends_at=int(time.time()) - 60
    )
    reply = gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}")
    _assert_problem(reply, 403, "trial_expired", "policy")


def test_trial_on_paid_only_route_is_403(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(
        roles=("customer_admin",),
        plan="trial",
        trial_mode=True,
        trial_ends_at=int(time.time()) + 3600,
    )
    reply = gateway_stack.request("cp", "GET", "/api/v1/reports", token=token)
    _assert_problem(reply, 403, "paid_only", "policy")


def test_budget_exhausted_is_402_with_retry_after(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(sub="tight-user", customer_id="cust-tight")
    statuses = [
        gateway_stack.request("plant", "GET", "/api/v1/orders", token=token).status
        for _ in range(2)
    ]
    assert statuses == [200, 200]
    reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
    body = _assert_problem(reply, 402, "budget_exceeded", "budget")
    assert body["budget"]["limit"] == 2
    assert body["budget"]["used"] == 2
    assert body["budget"]["window"] == "day"
    assert 0 < int(reply.headers["retry-after"]) <= 86_400


BAD_TOKENS = {
    "malformed": ("not.a.jwt", "token_invalid"),
    "expired": (
        jwt.encode(
            _claims(
                exp=int(time.time()) - 3600,
                iat=int(time.time()) - 7200,
                nbf=int(time.time()) - 7200,
            ),
            HS_SECRET,
        ),
        "token_expired",
    ),
    "not-yet-valid": (
        jwt.encode(_claims(nbf=int(time.time()) + 3600), HS_SECRET),
        "token_not_yet_valid",
    ),
    "wrong-issuer": (jwt.encode(_claims(iss="https://evil.test"), HS_SECRET), "issuer_unknown"),
    "wrong-audience": (jwt.encode(_claims(aud="someone-else"), HS_SECRET), "audience_mismatch"),
    "alg-none": (
        jwt.encode(_claims(), None, algorithm="none"),  # type: ignore[arg-type]
        "algorithm_not_allowed",
    ),
    "hs256-with-rs256-public-key": (_hs256_with_public_key(), "algorithm_not_allowed"),
    "unknown-kid": (
        jwt.encode(_claims(iss=JWKS_ISSUER), PRIVATE_PEM, algorithm="RS256", headers={"kid": "k9"}),
        "key_unknown",
    ),
    "oversized": (jwt.encode(_claims(pad="x" * 9000), HS_SECRET), "token_invalid"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_401_and_never_reach_the_backend(
    gateway_stack: GatewayStack, case: str
) -> None:
    token, code = BAD_TOKENS[case]
    reply = gateway_stack.request("cp", "GET", "/api/v1/orders", token=token)
    _assert_problem(reply, 401, code, "authenticate")
    challenge = reply.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "BEGIN" not in reply.body.decode()


def test_rs256_and_jwks_issuers_are_accepted(gateway_stack: GatewayStack) -> None:
    for issuer, headers in ((RS_ISSUER, None), (JWKS_ISSUER, {"kid": "k1"})):
        token = jwt.encode(_claims(iss=issuer), PRIVATE_PEM, algorithm="RS256", headers=headers)
        assert gateway_stack.request("cp", "GET", "/api/v1/orders", token=token).status == 200


def test_huge_header_is_refused_by_envoy(gateway_stack: GatewayStack) -> None:
    reply = gateway_stack.request("cp", "GET", "/api/v1/orders", token="x" * 70_000)
    assert reply.status == 431
    assert b"resource" not in reply.body
