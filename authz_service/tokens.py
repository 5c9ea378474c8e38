"""Bearer JWT verification: issuer lookup, explicit algorithms, key source, claims, cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import jwt
from jwt import PyJWK

from authz_service.cache import ExpiringLRU
from authz_service.compact_jws import MalformedTokenError, parse_compact_jws
from authz_service.errors import ErrorCode
from authz_service.ports import KeySource, KeyUnknownError
from authz_service.principal import ClaimError, Principal, principal_from_claims

# alg prefix -> the only JWK key type that may verify it (no HS/RS key confusion)
_KEY_TYPE_OF_ALG = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


# pyjwt's refusals -> (stable code, a reason that leaks no key material); subclasses first,
# since the first matching entry wins.
_PYJWT_REASONS: tuple[tuple[type[Exception], ErrorCode, str], ...] = (
    (jwt.ExpiredSignatureError, ErrorCode.TOKEN_EXPIRED, "token has expired"),
    (jwt.ImmatureSignatureError, ErrorCode.TOKEN_NOT_YET_VALID, "token is not yet valid"),
    (jwt.InvalidAudienceError, ErrorCode.AUDIENCE_MISMATCH, "token audience is not accepted"),
    (jwt.InvalidIssuerError, ErrorCode.ISSUER_UNKNOWN, "token issuer is not trusted"),
    (jwt.MissingRequiredClaimError, ErrorCode.TOKEN_INVALID, "a required claim is missing"),
    (jwt.InvalidAlgorithmError, ErrorCode.ALGORITHM_NOT_ALLOWED, "algorithm is not allowed"),
    (jwt.InvalidSignatureError, ErrorCode.TOKEN_INVALID, "signature verification failed"),
    # every other refusal of pyjwt (DecodeError, InvalidTokenError, PyJWKError, ...), and what
    # its key and claim handling raise on hostile values: a 401, never an unexpected error
    (jwt.PyJWTError, ErrorCode.TOKEN_INVALID, "token is invalid"),
    (ValueError, ErrorCode.TOKEN_INVALID, "token is invalid"),
    (TypeError, ErrorCode.TOKEN_INVALID, "token is invalid"),
    (ArithmeticError, ErrorCode.TOKEN_INVALID, "token is invalid"),
    (LookupError, ErrorCode.TOKEN_INVALID, "token is invalid"),
    (RecursionError, ErrorCode.TOKEN_INVALID, "token is invalid"),
)
_PYJWT_REJECTIONS = tuple(kind for kind, _, _ in _PYJWT_REASONS)


class TokenRejectedError(Exception):
    """The token is not acceptable; `detail` is safe to show the client (no key material)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """One issuer whose tokens are accepted: its exact `iss`, audiences, algorithms and keys.

    Built from the settings by wiring.py; the verifier knows nothing of where it came from.
    """

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    keys: KeySource


class TokenVerifier:
    """Verifies a compact JWS against the configured issuers and caches the result by digest."""

    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        *,
        leeway_seconds: float,
        cache_size: int,
        max_lifetime_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = issuers
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        self._clock = clock
        self._cache: ExpiringLRU[Principal] = ExpiringLRU("token", cache_size, clock)

    async def verify(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        principal = await self._verify_uncached(token)
        self._cache.put(digest, principal, principal.expires_at)
        return principal

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            parsed = parse_compact_jws(token)
        except MalformedTokenError as exc:
            raise TokenRejectedError(ErrorCode.TOKEN_INVALID, f"malformed token: {exc}") from exc
        _require_numeric_dates(parsed.claims)
        alg: str = parsed.header["alg"]
        kid: str | None = parsed.header.get("kid")
        issuer_name = parsed.claims.get("iss")
        trusted = self._issuers.get(issuer_name) if isinstance(issuer_name, str) else None
        if trusted is None:
            raise TokenRejectedError(ErrorCode.ISSUER_UNKNOWN, "token issuer is not trusted")
        if alg not in trusted.algorithms:
            raise TokenRejectedError(
                ErrorCode.ALGORITHM_NOT_ALLOWED, f"algorithm {alg[:16]!r} is not allowed"
            )
        try:
            key = await trusted.keys.key_for(kid)
        except KeyUnknownError as exc:
            raise TokenRejectedError(ErrorCode.KEY_UNKNOWN, "signing key is not known") from exc
        _require_key_fits(alg, key)
        claims = self._decode(token, key, alg, trusted)
        self._require_bounded_lifetime(claims)
        try:
            return principal_from_claims(claims)
        except ClaimError as exc:
            raise TokenRejectedError(ErrorCode.TOKEN_INVALID, str(exc)) from exc

    def _decode(self, token: str, key: PyJWK, alg: str, issuer: TrustedIssuer) -> dict[str, object]:
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud"], "strict_aud": False},
            )
        except _PYJWT_REJECTIONS as exc:
            code, reason = next(
                (code, reason) for kind, code, reason in _PYJWT_REASONS if isinstance(exc, kind)
            )
            if isinstance(exc, jwt.MissingRequiredClaimError):
                reason = f"claim {exc.claim!r} is required"
            raise TokenRejectedError(code, reason) from exc
        return claims

    def _require_bounded_lifetime(self, claims: Mapping[str, object]) -> None:
        """A token valid for years is a leaked credential that never dies: refuse it (0: no bound).

        Judged by `exp` against now, not `exp - iat`: `iat` is optional and the issuer's word.
        """
        # required by _decode, a number by _require_numeric_dates
        exp = cast("int | float", claims["exp"])
        # compared, never subtracted: an int too big for a float (10**400) must not raise
        if self._max_lifetime and exp > self._clock() + self._max_lifetime + self._leeway:
            raise TokenRejectedError(
                ErrorCode.TOKEN_INVALID,
                f"token expires more than {self._max_lifetime:g} s from now, longer than accepted",
            )


def _require_numeric_dates(claims: Mapping[str, object]) -> None:
    """RFC 7519 §2: exp, nbf and iat are JSON numbers (pyjwt also takes true and "123")."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TokenRejectedError(ErrorCode.TOKEN_INVALID, f"claim {name!r} is not a number")


def _require_key_fits(alg: str, key: PyJWK) -> None:
    expected = _KEY_TYPE_OF_ALG.get(alg[:2])
    key_type = getattr(key, "key_type", None)
    if expected is None or key_type != expected:
        raise TokenRejectedError(
            ErrorCode.ALGORITHM_NOT_ALLOWED, f"algorithm {alg[:16]!r} does not fit the issuer's key"
        )
