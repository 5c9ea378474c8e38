"""Every denial the pipeline can return: stable codes, their statuses and the problem+json body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PROBLEM_TYPE_BASE = "https://gateway.example/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
BEARER_REALM = "gateway"


class Stage(StrEnum):
    """The numbered pipeline stages, in order; `internal` is the servicer itself."""

    AUTHENTICATE = "authenticate"
    AUTHORIZE = "authorize"
    POLICY = "policy"
    BUDGET = "budget"
    DECIDE = "decide"
    INTERNAL = "internal"


class ErrorCode(StrEnum):
    """Stable denial codes: the problem `type` suffix, the metric label and the audit reason."""

    TOKEN_MISSING = "token_missing"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    ISSUER_UNKNOWN = "issuer_unknown"
    AUDIENCE_MISMATCH = "audience_mismatch"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    KEY_UNKNOWN = "key_unknown"
    PERMISSION_DENIED = "permission_denied"
    TRIAL_EXPIRED = "trial_expired"
    PAID_ONLY = "paid_only"
    POLICY_DENIED = "policy_denied"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    ROUTE_MISCONFIGURED = "route_misconfigured"
    INTERNAL_ERROR = "internal_error"
    # never an answer: Envoy gave up on the check (its timeout, or the client went away)
    CHECK_CANCELLED = "check_cancelled"


# code -> (HTTP status, problem title)
_SPEC: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.TOKEN_MISSING: (401, "Authentication required"),
    ErrorCode.TOKEN_INVALID: (401, "Invalid token"),
    ErrorCode.TOKEN_EXPIRED: (401, "Token expired"),
    ErrorCode.TOKEN_NOT_YET_VALID: (401, "Token not yet valid"),
    ErrorCode.ISSUER_UNKNOWN: (401, "Unknown token issuer"),
    ErrorCode.AUDIENCE_MISMATCH: (401, "Token audience mismatch"),
    ErrorCode.ALGORITHM_NOT_ALLOWED: (401, "Token algorithm not allowed"),
    ErrorCode.KEY_UNKNOWN: (401, "Unknown signing key"),
    ErrorCode.PERMISSION_DENIED: (403, "Permission denied"),
    ErrorCode.TRIAL_EXPIRED: (403, "Trial expired"),
    ErrorCode.PAID_ONLY: (403, "Paid plan required"),
    ErrorCode.POLICY_DENIED: (403, "Denied by policy"),
    ErrorCode.BUDGET_EXCEEDED: (402, "Budget exceeded"),
    ErrorCode.DEPENDENCY_UNAVAILABLE: (503, "Authorization dependency unavailable"),
    ErrorCode.AUDIT_UNAVAILABLE: (503, "Audit trail unavailable"),
    ErrorCode.ROUTE_MISCONFIGURED: (503, "Route authorization misconfigured"),
    ErrorCode.INTERNAL_ERROR: (503, "Authorization failed"),
    ErrorCode.CHECK_CANCELLED: (499, "Check cancelled"),
}

_TOKEN_CODES = frozenset(code for code, (status, _) in _SPEC.items() if status == 401)


def status_of(code: ErrorCode) -> int:
    return _SPEC[code][0]


def problem_type(code: ErrorCode) -> str:
    return PROBLEM_TYPE_BASE + code.value


@dataclass(frozen=True, slots=True)
class Denial:
    """A stage's refusal: the code, the stage, a client-safe detail and any extra fields/headers."""

    code: ErrorCode
    stage: Stage
    detail: str
    headers: tuple[tuple[str, str], ...] = ()
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return status_of(self.code)

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers of the denied response, WWW-Authenticate included for 401s."""
        headers = [("content-type", PROBLEM_CONTENT_TYPE), ("cache-control", "no-store")]
        if self.code is ErrorCode.TOKEN_MISSING:
            headers.append(("www-authenticate", f'Bearer realm="{BEARER_REALM}"'))
        elif self.code in _TOKEN_CODES:
            # a header value: printable ASCII only (the detail may quote a token's own text)
            description = "".join(c for c in self.detail if " " <= c <= "~" and c not in '\\"')
            headers.append(
                (
                    "www-authenticate",
                    f'Bearer realm="{BEARER_REALM}", error="invalid_token", '
                    f'error_description="{description}"',
                )
            )
        headers.extend(self.headers)
        return headers

    def problem(self, instance: str, correlation_id: str | None) -> dict[str, Any]:
        """The RFC 7807 body; extensions never override the standard members."""
        body: dict[str, Any] = dict(self.extensions)
        body.update(
            type=problem_type(self.code),
            title=_SPEC[self.code][1],
            status=self.status,
            detail=self.detail,
            instance=instance,
            code=self.code.value,
            stage=self.stage.value,
            correlation_id=correlation_id,
        )
        return body


class DependencyUnavailableError(Exception):
    """A dependency (OPA, Redis, a JWKS endpoint) failed or was too slow to let a stage decide."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason
