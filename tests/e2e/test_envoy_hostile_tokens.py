"""Hostile bearer tokens through the real Envoy and authz service: a 401 problem, never a 5xx.

The verifier's own property test covers the space of tokens (tests/unit/authz); these rows
check the whole path for the reported cases (issue 13, findings 1 and 2) and for bytes only a
raw client can send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from typing import Any

import pytest

from tests.e2e._gateway_stack import GatewayStack
from tests.support.issuers import AUDIENCE, ISSUER
from tests.support.issuers import SECRET as HS256_SECRET

PROBLEM_BASE = "https://gateway.example/problems/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: dict[str, Any], **claims: Any) -> str:
    now = int(time.time())
    # an hour: these rows are signed at collection, minutes before they run
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "exp": now + 3600, "roles": ["customer"],
            "customer_id": "c", **claims}  # fmt: skip
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    mac = hmac.new(HS256_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


VALID = _signed({"alg": "HS256"})
TOKENS = {
    "kid-number": _signed({"alg": "HS256", "kid": 123}),
    "kid-null": _signed({"alg": "HS256", "kid": None}),
    "kid-object": _signed({"alg": "HS256", "kid": {}}),
    "crit-unknown": _signed({"alg": "HS256", "crit": ["urn:x"], "urn:x": 1}),
    "crit-empty": _signed({"alg": "HS256", "crit": []}),
    "signature-padded": VALID + "=",
    "signature-std-alphabet": VALID[:-1] + "+",
    "sub-header-injection": _signed({"alg": "HS256"}, sub="u\r\nx-roles: admin"),
    "role-smuggling": _signed({"alg": "HS256"}, roles=["customer,admin"]),
    "exp-overflow": _signed({"alg": "HS256"}, exp=10**400),
    # valid for ever in all but name: past AUTHZ_JWT_MAX_LIFETIME_SECONDS (a day by default)
    "exp-in-ten-years": _signed({"alg": "HS256"}, exp=int(time.time()) + 10 * 365 * 86_400),
    "exp-1e30": _signed({"alg": "HS256"}, exp=10**30),
}


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
@pytest.mark.parametrize("name", sorted(TOKENS))
def test_a_malformed_token_is_a_401_problem(
    gateway_stack: GatewayStack, entry: str, name: str
) -> None:
    reply = gateway_stack.request(entry, "GET", "/api/v1/me", token=TOKENS[name])
    assert reply.status == 401, reply.body[:300]
    assert reply.content_type == "application/problem+json"
    assert reply.json()["type"] == PROBLEM_BASE + "token_invalid"
    assert reply.json()["stage"] == "authenticate"


def test_the_unmangled_token_passes(gateway_stack: GatewayStack) -> None:
    assert gateway_stack.request("plant", "GET", "/api/v1/me", token=VALID).status == 200


@pytest.mark.parametrize(
    ("raw_token", "status"),
    [(b"\xff\xfe.\xc3(.x", 401), (b"\xe9t\xe9", 401), (b"a.b.c\x7f", 400)],
    ids=["not-utf-8", "latin-1", "control-byte"],
)
def test_bytes_no_token_holds_are_refused(
    gateway_stack: GatewayStack, raw_token: bytes, status: int
) -> None:
    """Not UTF-8: the service refuses it (401); a control byte: Envoy's codec does (400)."""
    request = b"GET /api/v1/me HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " + raw_token
    with socket.create_connection(("127.0.0.1", gateway_stack.port("cp")), timeout=10) as sock:
        sock.sendall(request + b"\r\nConnection: close\r\n\r\n")
        status_line = sock.makefile("rb").readline()
    assert int(status_line.split()[1]) == status, status_line
