"""Development tokens signed with an HS256 issuer secret, for `make token` and the tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt


def sign_dev_token(  # noqa: PLR0917 - the documented positional call
    secret: str,
    issuer: str,
    audience: str,
    sub: str,
    roles: Sequence[str],
    customer_id: str | None = None,
    plan: str = "standard",
    trial_mode: bool = False,
    trial_ends_at: int | str | None = None,
    ttl: int = 3600,
    *,
    now: int | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """An HS256 token for a development issuer configured with `hs256_secret`."""
    issued_at = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "roles": list(roles),
        "plan": plan,
        "trial_mode": trial_mode,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl,
        "jti": uuid.uuid4().hex,
    }
    if customer_id is not None:
        claims["customer_id"] = customer_id
    if trial_ends_at is not None:
        claims["trial_ends_at"] = trial_ends_at
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256")
