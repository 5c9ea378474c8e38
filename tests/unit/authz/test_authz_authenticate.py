"""Stage 1: every way a bearer token is refused, and how good claims become a principal."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from authz_service.devtokens import sign_dev_token
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.principal import Principal
from authz_service.stages.authenticate import authenticate
from authz_service.tokens import TokenVerifier
from gateway_contract.runtime import BudgetSubject
from tests.unit.authz.authz_helpers import (
    AUDIENCE,
    HS_ISSUER,
    RS_ISSUER,
    SECRET,
    RsaKey,
    check_context,
)
from tests.unit.authz.token_cases import hs256, signed, valid_claims


def _claims(**overrides: Any) -> dict[str, Any]:
    """token_cases' valid claims; an override of None leaves the claim out."""
    claims = valid_claims(int(time.time()), **overrides)
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
    assert principal.budget_subject == BudgetSubject("customer", "cust-7")


async def test_user_without_customer_is_its_own_budget_subject(verifier: TokenVerifier) -> None:
    token = sign_dev_token(SECRET, HS_ISSUER, AUDIENCE, "solo", ["customer"])
    principal = await authenticate(check_context(token), verifier, max_token_bytes=4096)
    assert isinstance(principal, Principal)
    assert principal.customer_id is None
    assert principal.budget_subject == BudgetSubject("user", "solo")
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


# --- malformed JOSE headers, encodings and claims: always a 401, never an unexpected error ---


def _good_segments() -> tuple[str, str]:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return header, _b64(json.dumps(_claims()).encode())


def _resigned(header_segment: str, payload_segment: str) -> str:
    return f"{header_segment}.{payload_segment}.{hs256(header_segment, payload_segment)}"


def _with_header(**params: Any) -> str:
    header = {"alg": "HS256", **params}
    return signed({k: v for k, v in header.items() if v is not _ABSENT}, _claims())


def _with_claims(**overrides: Any) -> str:
    return signed({"alg": "HS256"}, {**_claims(), **overrides})


def _raw_payload(text: bytes) -> str:
    return _resigned(_good_segments()[0], _b64(text))


def _respelled(token: str, index: int) -> str:
    """The same bytes in another base64url spelling: a non-zero trailing bit."""
    segments = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = segments[index][-1]
    segments[index] = segments[index][:-1] + alphabet[alphabet.index(last) | 1]
    return ".".join(segments)


_ABSENT = object()
_VALID = _with_header()
# every signature segment below is a real HS256 signature unless the case is about it
MALFORMED_TOKENS: dict[str, tuple[str, str]] = {
    # JOSE header parameters (finding 1: these gave 503 internal_error)
    "kid-number": (_with_header(kid=123), "kid is not a string"),
    "kid-null": (_with_header(kid=None), "kid is not a string"),
    "kid-object": (_with_header(kid={}), "kid is not a string"),
    "kid-list": (_with_header(kid=["a"]), "kid is not a string"),
    "crit-unknown": (_with_header(crit=["urn:x"], **{"urn:x": 1}), "extension 'urn:x'"),
    "crit-empty": (_with_header(crit=[]), "crit is not a non-empty list"),
    "crit-not-list": (_with_header(crit="exp"), "crit is not a non-empty list"),
    "crit-not-names": (_with_header(crit=[1]), "crit is not a non-empty list"),
    "crit-registered": (_with_header(crit=["exp"]), "extension 'exp'"),
    "crit-b64": (_with_header(crit=["b64"], b64=False), "extension 'b64'"),
    "b64-without-crit": (_with_header(b64=False), "b64"),
    "alg-missing": (_with_header(alg=_ABSENT), "alg is not a string"),
    "alg-number": (_with_header(alg=256), "alg is not a string"),
    "alg-empty": (_with_header(alg=""), "alg is not a string"),
    "typ-number": (_with_header(typ=1), "typ is not a string"),
    "header-duplicate-alg": (
        _resigned(_b64(b'{"alg":"HS256","alg":"none"}'), _good_segments()[1]),
        "duplicate member 'alg'",
    ),
    "header-not-object": (_resigned(_b64(b'["HS256"]'), _good_segments()[1]), "JSON object"),
    "header-not-utf8": (_resigned(_b64(b'{"alg":"\xff"}'), _good_segments()[1]), "UTF-8 JSON"),
    "header-nan": (_resigned(_b64(b'{"alg":"HS256","x":NaN}'), _good_segments()[1]), "NaN"),
    # encodings (finding 2: a padded signature was accepted)
    "signature-padded": (_VALID + "=", "signature is not base64url"),
    "signature-padded-twice": (_VALID + "==", "signature is not base64url"),
    "header-padded": (_VALID.replace(".", "=.", 1), "header is not base64url"),
    "signature-std-alphabet": (_VALID[:-2] + "+/", "signature is not base64url"),
    "signature-trailing-bits": (_respelled(_VALID, 2), "signature is not canonical"),
    "header-trailing-bits": (_respelled(_VALID, 0), "header is not canonical"),
    "inner-space": (_VALID[:20] + " " + _VALID[20:], "not base64url"),
    "inner-tab": (_VALID[:20] + "\t" + _VALID[20:], "not base64url"),
    "trailing-newline": (_VALID + "\n", "not base64url"),
    "two-segments": (_VALID.rsplit(".", 1)[0], "three dot-separated segments"),
    "four-segments": (_VALID + ".x", "three dot-separated segments"),
    "jwe-five-segments": ("a.b.c.d.e", "three dot-separated segments"),
    "empty-header": ("." + _VALID.split(".", 1)[1], "header is not UTF-8 JSON"),
    # claims
    "payload-duplicate-sub": (_raw_payload(b'{"sub":"a","sub":"b"}'), "duplicate member 'sub'"),
    "payload-deep": (_raw_payload(b"[" * 1100 + b"]" * 1100), "payload is not UTF-8 JSON"),
    "exp-huge": (_with_claims(exp=10**400), "exp"),
    "exp-numeric-string": (_with_claims(exp=str(int(time.time()) + 60)), "'exp' is not a number"),
    "exp-true": (_with_claims(exp=True), "'exp' is not a number"),
    "nbf-true": (_with_claims(nbf=True), "'nbf' is not a number"),
    "trial-ends-huge": (_with_claims(trial_ends_at=10**400), "trial_ends_at"),
    "sub-crlf": (_with_claims(sub="alice\r\nx-roles: admin"), "control characters"),
    "sub-padded": (_with_claims(sub=" alice"), "surrounding whitespace"),
    "sub-nul": (_with_claims(sub="a\x00b"), "control characters"),
    "customer-too-long": (_with_claims(customer_id="c" * 300), "at most 256"),
    "role-with-comma": (_with_claims(roles=["viewer,admin"]), "roles"),
    "role-with-space": (_with_claims(roles=["viewer admin"]), "roles"),
}


@pytest.mark.parametrize(("token", "detail"), MALFORMED_TOKENS.values(), ids=list(MALFORMED_TOKENS))
async def test_malformed_tokens_are_a_401_naming_the_part(
    verifier: TokenVerifier, token: str, detail: str
) -> None:
    denial = await _denial(verifier, token)
    assert denial.code is ErrorCode.TOKEN_INVALID, denial
    assert detail in denial.detail, denial.detail
    header = dict(denial.response_headers())["www-authenticate"]
    assert all(" " <= c <= "~" for c in header)


async def test_the_unmangled_token_of_the_table_is_accepted(verifier: TokenVerifier) -> None:
    result = await authenticate(check_context(_VALID), verifier, max_token_bytes=4096)
    assert isinstance(result, Principal)
    spaced = check_context(None, headers={"authorization": f"Bearer   {_VALID}"})
    assert isinstance(await authenticate(spaced, verifier, max_token_bytes=4096), Principal)


# --- lifetime: a token that expires years ahead is a credential that never dies ---


@pytest.mark.parametrize(
    "exp_ahead", [86_400 * 2, 86_400 * 365 * 1000, 10**30], ids=["2-days", "1000-years", "1e30"]
)
async def test_a_token_expiring_past_the_lifetime_bound_is_refused(
    verifier: TokenVerifier, exp_ahead: int
) -> None:
    bounded = TokenVerifier(
        verifier._issuers, leeway_seconds=5, cache_size=10, max_lifetime_seconds=86_400
    )
    token = _hs(exp=int(time.time()) + exp_ahead, iat=None)
    denial = await _denial(bounded, token)
    assert denial.code is ErrorCode.TOKEN_INVALID
    assert "86400 s" in denial.detail


async def test_a_token_within_the_lifetime_bound_passes_and_zero_lifts_it(
    verifier: TokenVerifier,
) -> None:
    bounded = TokenVerifier(
        verifier._issuers, leeway_seconds=5, cache_size=10, max_lifetime_seconds=86_400
    )
    assert (await bounded.verify(_hs(exp=int(time.time()) + 86_000))).user_id == "user-1"
    unbounded = TokenVerifier(
        verifier._issuers, leeway_seconds=5, cache_size=10, max_lifetime_seconds=0
    )
    far = _hs(exp=int(time.time()) + 86_400 * 365 * 1000)
    assert (await unbounded.verify(far)).user_id == "user-1"
