"""Stage 1: the bearer token becomes a principal, or a 401 denial."""

from __future__ import annotations

from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import Verifier
from authz_service.principal import Principal
from authz_service.tokens import TokenRejectedError


async def authenticate(
    check: CheckContext, verifier: Verifier, max_token_bytes: int
) -> Principal | Denial:
    header = check.headers.get("authorization", "")
    if not header:
        return Denial(ErrorCode.TOKEN_MISSING, Stage.AUTHENTICATE, "a bearer token is required")
    # RFC 6750 §2.1: "Bearer" 1*SP token; any other whitespace is part of a malformed token
    scheme, _, token = header.partition(" ")
    token = token.lstrip(" ")
    if scheme.lower() != "bearer" or not token:
        return Denial(
            ErrorCode.TOKEN_MISSING, Stage.AUTHENTICATE, "the Authorization header is not Bearer"
        )
    if len(token) > max_token_bytes:
        return Denial(ErrorCode.TOKEN_INVALID, Stage.AUTHENTICATE, "token is too large")
    try:
        return await verifier.verify(token)
    except TokenRejectedError as exc:
        return Denial(exc.code, Stage.AUTHENTICATE, exc.detail)
