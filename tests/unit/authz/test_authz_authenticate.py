"""Stage 1: every way a bearer token is refused, and how good claims become a principal."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest

from authz_service.devtokens import sign_dev_token
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.principal import Principal
from authz_service.stages.authenticate import authenticate
from authz_service.tokens import TokenVerifier
from tests.unit.authz.authz_helpers import (
    AUDIENCE,
    HS_ISSUER,
    RS_ISSUER,
    SECRET,
    RsaKey,
    check_context,
)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": HS_ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "roles": ["customer"],
        "customer_id": "cust-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(**overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")


async def _denial(verifier: TokenVerifier, token: str | None, header: str | None = None) -> Denial:
    ctx = check_context(token, headers={"authorization": header} if header else None)
    result = await authenticate(ctx, verifier, max_token_bytes=4096)
    assert isinstance(result, Denial), result
    assert result.stage is Stage.AUTHENTICATE
    assert result.status == 401
    return result


async def test_missing_token_asks_for_bearer(verifier: TokenVerifier) -> None:
    denial = await _denial(verifier, None)
    assert denial.code is ErrorCode.TOKEN_MISSING
    assert ("www-authenticate", 'Bearer realm="gateway"') in denial.response_headers()


async def test_non_bearer_scheme_is_missing_token(verifier: TokenVerifier) -> None:
    denial = await _denial(verifier, None, header="Basic dXNlcjpwYXNz")
    assert denial.code is ErrorCode.TOKEN_MISSING


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-jwt", ErrorCode.TOKEN_INVALID),
        ("a.b.c", ErrorCode.TOKEN_INVALID),
        (_hs(exp=int(time.time()) - 3600), ErrorCode.TOKEN_EXPIRED),
        (_hs(nbf=int(time.time()) + 3600), ErrorCode.TOKEN_NOT_YET_VALID),
        (_hs(iat=int(time.time()) + 3600), ErrorCode.TOKEN_NOT_YET_VALID),
        (_hs(iss="https://evil.test"), ErrorCode.ISSUER_UNKNOWN),
        (_hs(aud="other-api"), ErrorCode.AUDIENCE_MISMATCH),
        (_hs(exp=None), ErrorCode.TOKEN_INVALID),
        (_hs(sub=None), ErrorCode.TOKEN_INVALID),
        (_hs(roles="admin,customer", plan="platinum"), ErrorCode.TOKEN_INVALID),
        (_hs(trial_mode="yes"), ErrorCode.TOKEN_INVALID),
        (
            jwt.encode(_claims(), "another-secret-0123456789abcdefghijk", algorithm="HS256"),
            ErrorCode.TOKEN_INVALID,
        ),
        (jwt.encode(_claims(), SECRET * 2, algorithm="HS512"), ErrorCode.ALGORITHM_NOT_ALLOWED),
    ],
    ids=[
        "garbage",
        "three-junk-parts",
        "expired",
        "nbf-future",
        "iat-future",
        "wrong-issuer",
        "wrong-audience",
        "no-exp",
        "no-sub",
        "bad-plan",
        "bad-trial-flag",
        "wrong-secret",
        "alg-not-listed",
    ],
)
async def test_bad_tokens_are_refused(verifier: TokenVerifier, token: str, code: ErrorCode) -> None:
    denial = await _denial(verifier, token)
    assert denial.code is code
    header = dict(denial.response_headers())["www-authenticate"]
    assert 'error="invalid_token"' in header


async def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(_claims(), None, algorithm="none")  # type: ignore[arg-type]
    assert (await _denial(verifier, token)).code is ErrorCode.ALGORITHM_NOT_ALLOWED


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_hs256_signed_with_the_rs256_public_key_is_refused(
    verifier: TokenVerifier, rsa_key: RsaKey
) -> None:
    # the classic confusion: an HMAC over the token keyed with the issuer's public PEM
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415
    import json  # noqa: PLC0415

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(iss=RS_ISSUER)).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(rsa_key.public_pem.encode(), signing_input, hashlib.sha256).digest()
    token = f"{header}.{payload}.{_b64(signature)}"
    denial = await _denial(verifier, token)
    assert denial.code is ErrorCode.ALGORITHM_NOT_ALLOWED
    assert "BEGIN" not in denial.detail


async def test_rs256_token_is_accepted(verifier: TokenVerifier, rsa_key: RsaKey) -> None:
    token = jwt.encode(_claims(iss=RS_ISSUER), rsa_key.private_pem, algorithm="RS256")
    result = await authenticate(check_context(token), verifier, max_token_bytes=4096)
    assert isinstance(result, Principal)
    assert result.issuer == RS_ISSUER


async def test_huge_token_is_refused_before_parsing(verifier: TokenVerifier) -> None:
    token = _hs(padding="x" * 10_000)
    denial = await _denial(verifier, token)
    assert denial.code is ErrorCode.TOKEN_INVALID
    assert "too large" in denial.detail


async def test_claims_map_to_the_principal(verifier: TokenVerifier) -> None:
    token = sign_dev_token(
        SECRET,
        HS_ISSUER,
        AUDIENCE,
        "user-7",
        ["customer", "ops"],
        customer_id="cust-7",
        plan="trial",
        trial_mode=True,
        trial_ends_at="2030-01-02T03:04:05Z",
    )
    principal = await authenticate(check_context(token), verifier, max_token_bytes=4096)
    assert isinstance(principal, Principal)
    assert principal.user_id == "user-7"
    assert principal.customer_id == "cust-7"
    assert principal.roles == ("customer", "ops")
    assert principal.trial_mode is True
    assert principal.plan == "trial"
    assert principal.trial_ends_at == 1893553445.0
    assert principal.token_id is not None
    assert principal.budget_subject == "cust-7"


async def test_user_without_customer_is_its_own_budget_subject(verifier: TokenVerifier) -> None:
    token = sign_dev_token(SECRET, HS_ISSUER, AUDIENCE, "solo", ["customer"])
    principal = await authenticate(check_context(token), verifier, max_token_bytes=4096)
    assert isinstance(principal, Principal)
    assert principal.customer_id is None
    assert principal.budget_subject == "solo"
    assert principal.plan == "standard"


async def test_verified_tokens_are_cached_until_expiry(verifier: TokenVerifier) -> None:
    clock = [time.time()]
    cached = TokenVerifier(
        verifier._issuers, leeway_seconds=0, cache_size=10, clock=lambda: clock[0]
    )
    token = sign_dev_token(SECRET, HS_ISSUER, AUDIENCE, "u", ["customer"], ttl=60)
    first = await cached.verify(token)
    assert await cached.verify(token) is first
    clock[0] += 61
    # past its expiry the cached principal is gone; the token itself is re-verified (and
    # PyJWT's real clock still accepts it), so a new principal object comes back
    assert await cached.verify(token) is not first
