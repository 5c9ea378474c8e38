"""Property: no bearer token gets a 5xx, and only an exactly valid token is accepted.

The hypothesis profile `token-fuzz` fixes the example count CI runs (at least 10,000);
GATEWAY_TOKEN_FUZZ_EXAMPLES raises it for a longer local run.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings

from authz_service.check_context import CheckContext
from authz_service.errors import Denial
from authz_service.principal import MAX_IDENTITY_CHARS, PLANS, Principal
from authz_service.servicer import allowed_response, denied_response
from authz_service.stages.authenticate import authenticate
from authz_service.stages.decide import decide
from authz_service.tokens import TokenVerifier
from tests.unit.authz.authz_helpers import AUDIENCE, HS_ISSUER, RS_ISSUER, RsaKey, check_context
from tests.unit.authz.token_cases import (
    LEEWAY_SECONDS,
    TokenCase,
    signed,
    token_cases,
    valid_claims,
)

# CI runs 10,000; the variable can only ask for more
TOKEN_FUZZ_EXAMPLES = max(10_000, int(os.environ.get("GATEWAY_TOKEN_FUZZ_EXAMPLES", "0")))
settings.register_profile(
    "token-fuzz",
    max_examples=TOKEN_FUZZ_EXAMPLES,
    deadline=None,  # a loaded CI box must not turn slowness into failures
    database=None,  # nothing written into the work tree; failures print their reproduction
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_TOKEN_BYTES = 8192


def _pool(rsa_key: RsaKey) -> list[str]:
    """Valid tokens of both issuers, with and without kid, to mutate."""
    now = int(time.time())
    hs = [
        signed({"alg": "HS256", "typ": "JWT"}, valid_claims(now)),
        signed({"alg": "HS256", "kid": "k1"}, valid_claims(now, roles="admin", plan="trial")),
        signed({"alg": "HS256"}, valid_claims(now, aud=[AUDIENCE, "other"], customer_id=None)),
    ]
    claims = valid_claims(now, iss=RS_ISSUER)
    rs = jwt.encode(claims, rsa_key.private_pem, algorithm="RS256", headers={"kid": "r"})
    return [*hs, rs]


def _header_safe(value: str) -> bool:
    return all(" " <= c <= "~" or 0x80 <= ord(c) < 0xD800 or ord(c) > 0xDFFF for c in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _acceptable(case: TokenCase) -> bool:
    """What any accepted signed token must satisfy: the oracle, independent of the verifier."""
    header, claims, now = case.header, case.claims, time.time()
    if not isinstance(claims, dict) or header.get("alg") != "HS256":
        return False
    if "crit" in header or "b64" in header or not isinstance(header.get("kid", ""), str):
        return False
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    sub = claims.get("sub")
    dates = [name for name in ("nbf", "iat") if name in claims]
    return (
        claims.get("iss") == HS_ISSUER
        and AUDIENCE in audiences
        and _number(claims.get("exp"))
        and claims["exp"] > now - LEEWAY_SECONDS - 1
        and all(_number(claims[c]) and claims[c] <= now + LEEWAY_SECONDS + 1 for c in dates)
        and isinstance(sub, str)
        and 0 < len(sub) <= MAX_IDENTITY_CHARS
        and sub == sub.strip()
        and claims.get("plan", "standard") in (*PLANS, None, "")
    )


def _assert_serializable(principal: Principal | None, response: Any) -> None:
    """The answer Envoy gets is a valid message whose header values a header can carry."""
    response.SerializeToString()
    headers = [*response.ok_response.headers, *response.denied_response.headers]
    for option in headers:
        assert _header_safe(option.header.value), option.header
    if principal is not None:
        assert all(_header_safe(v) for v in (principal.user_id, *principal.roles))
        assert not any("," in role or " " in role for role in principal.roles)


async def _verdict(verifier: TokenVerifier, case: TokenCase) -> Principal | Denial:
    check: CheckContext = check_context(case.token)
    try:
        result = await authenticate(check, verifier, MAX_TOKEN_BYTES)
    except Exception as exc:  # an escaped exception is the servicer's 503
        pytest.fail(f"{type(exc).__name__} escaped for {case!r}: {exc}")
    if isinstance(result, Denial):
        assert result.status == 401, (result, case)
        _assert_serializable(None, denied_response(result, check))
    else:
        allowance = await decide(check, result, None)
        _assert_serializable(result, allowed_response(allowance))
    return result


@pytest.fixture
def fuzz_verifier(verifier: TokenVerifier) -> TokenVerifier:
    # no cache: every example is verified, not answered from an earlier one
    return TokenVerifier(verifier._issuers, leeway_seconds=LEEWAY_SECONDS, cache_size=0)


async def test_the_pool_tokens_are_accepted(fuzz_verifier: TokenVerifier, rsa_key: RsaKey) -> None:
    for token in _pool(rsa_key):
        verdict = await _verdict(fuzz_verifier, TokenCase(token, "mutated", original=token))
        assert isinstance(verdict, Principal), verdict


def test_no_token_gets_a_5xx_and_only_exactly_valid_ones_pass(
    fuzz_verifier: TokenVerifier, rsa_key: RsaKey
) -> None:
    # one event loop for all examples: a loop per example would cost more than the check
    with asyncio.Runner() as runner:

        @settings(settings.get_profile("token-fuzz"))
        @given(case=token_cases(_pool(rsa_key)))
        def verdict_follows_the_rule(case: TokenCase) -> None:
            verdict = runner.run(_verdict(fuzz_verifier, case))
            accepted = isinstance(verdict, Principal)
            if case.kind == "mutated":
                # spaces after "Bearer" are the header's separator (RFC 6750: 1*SP)
                assert accepted == (case.token.lstrip(" ") == case.original), (case, verdict)
            elif case.kind == "signed":
                assert not accepted or _acceptable(case), (case, verdict)
            else:
                assert not accepted, case

        verdict_follows_the_rule()
