"""The authenticated caller, mapped from verified JWT claims."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway_contract.runtime import BudgetSubject

PLANS = ("trial", "standard", "enterprise")
# Identity claims reach the upstream as header values (x-user-id, x-customer-id, x-roles) and
# the audit trail: a control character would split or break the header (Envoy refuses the
# check response: a 503), a lone surrogate is no UTF-8, and Envoy trims the whitespace around a
# value, so " alice" would be alice upstream but another budget subject here.
MAX_IDENTITY_CHARS = 256
_NOT_HEADER_SAFE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]|^\s|\s$")
# x-roles is a comma-separated list: a role holding a comma or a space would become two roles
# upstream while RBAC here saw one
_ROLE = re.compile(r"[^\s,\x00-\x1f\x7f\ud800-\udfff]{1,128}")


class ClaimError(ValueError):
    """A claim is present but unusable; the message names the claim, never its value's secrets."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    customer_id: str | None
    roles: tuple[str, ...]
    trial_mode: bool
    trial_ends_at: float | None  # unix seconds
    plan: str
    token_id: str | None
    issuer: str
    expires_at: float  # unix seconds

    @property
    def budget_subject(self) -> BudgetSubject:
        """Budgets are per customer, or per user when the user has no customer."""
        if self.customer_id is not None:
            return BudgetSubject("customer", self.customer_id)
        return BudgetSubject("user", self.user_id)

    def policy_input(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "customer_id": self.customer_id,
            "roles": list(self.roles),
            "trial_mode": self.trial_mode,
            "trial_ends_at": self.trial_ends_at,
            "plan": self.plan,
        }


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ClaimError(f"claim '{name}' must be a string")
    if len(value) > MAX_IDENTITY_CHARS or _NOT_HEADER_SAFE.search(value):
        raise ClaimError(
            f"claim '{name}' must be at most {MAX_IDENTITY_CHARS} characters, without control "
            "characters or surrounding whitespace"
        )
    return value


def _roles(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("roles", [])
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise ClaimError("claim 'roles' must be a list of strings")
    if not all(_ROLE.fullmatch(role) for role in value):
        raise ClaimError("claim 'roles' holds a role with a comma, whitespace or control character")
    return tuple(dict.fromkeys(value))


def _timestamp(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ClaimError(f"claim '{name}' must be unix seconds or RFC 3339")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ClaimError(f"claim '{name}' is out of range")
        return seconds
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ClaimError(f"claim '{name}' must be unix seconds or RFC 3339") from exc
        if parsed.tzinfo is None:
            raise ClaimError(f"claim '{name}' needs a timezone")
        try:
            return parsed.timestamp()
        except (OverflowError, ValueError) as exc:
            raise ClaimError(f"claim '{name}' is out of range") from exc
    raise ClaimError(f"claim '{name}' must be unix seconds or RFC 3339")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Map verified claims to a principal; raise ClaimError naming the bad claim."""
    user_id = _optional_str(claims, "sub")
    if user_id is None:
        raise ClaimError("claim 'sub' is required")
    trial_mode = claims.get("trial_mode", False)
    if not isinstance(trial_mode, bool):
        raise ClaimError("claim 'trial_mode' must be a boolean")
    plan = _optional_str(claims, "plan") or ("trial" if trial_mode else "standard")
    if plan not in PLANS:
        raise ClaimError(f"claim 'plan' must be one of {', '.join(PLANS)}")
    issuer = _optional_str(claims, "iss") or ""
    exp = _timestamp(claims, "exp")
    if exp is None:
        raise ClaimError("claim 'exp' is required")
    return Principal(
        user_id=user_id,
        customer_id=_optional_str(claims, "customer_id"),
        roles=_roles(claims),
        trial_mode=trial_mode,
        trial_ends_at=_timestamp(claims, "trial_ends_at"),
        plan=plan,
        token_id=_optional_str(claims, "jti"),
        issuer=issuer,
        expires_at=exp,
    )
