"""Stage 3: ask the policy engine (OPA or embedded regopy) about the principal and the request."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz_service.cache import ExpiringLRU
from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import PolicyEngine
from authz_service.principal import Principal

_REASON_CODES = {"trial_expired": ErrorCode.TRIAL_EXPIRED, "paid_only": ErrorCode.PAID_ONLY}
_REASON_DETAILS = {
    "trial_expired": "the trial period has ended",
    "paid_only": "this route needs a paid plan; trial accounts cannot use it",
}


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    path: str
    allow: bool
    reason: str
    cached: bool

    def audit(self) -> dict[str, Any]:
        return {self.path: {"allow": self.allow, "reason": self.reason, "cached": self.cached}}


class PolicyEvaluator:
    """The engine behind a decision cache keyed by the time-independent part of the input."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        cache_seconds: float,
        cache_size: int,
        headers: tuple[str, ...],
        clock: Callable[[], float] = time.time,
        revision: str = "",
    ) -> None:
        self.engine = engine
        self.revision = revision  # of the policies the engine runs; part of every cache key
        self._cache_seconds = cache_seconds
        self.headers = tuple(name.lower() for name in headers)  # copied into the policy input
        self._clock = clock
        self._cache: ExpiringLRU[tuple[bool, str]] = ExpiringLRU(
            "policy", cache_size if cache_seconds > 0 else 0, clock
        )

    def swap(self, engine: PolicyEngine, revision: str) -> PolicyEngine:
        """Use a new engine and revision from the next evaluation on; returns the old engine."""
        old, self.engine, self.revision = self.engine, engine, revision
        return old

    def build_input(self, check: CheckContext, principal: Principal) -> dict[str, Any]:
        return {
            "principal": principal.policy_input(),
            "request": {
                "method": check.method,
                "path": check.path_only,
                "route_id": check.route.route_id,
                "gateway_type": check.route.gateway_type,
                "paid_only": check.route.paid_only,
                "headers": {k: check.headers[k] for k in self.headers if k in check.headers},
            },
        }

    def cache_key(self, path: str, check: CheckContext, principal: Principal) -> Hashable:
        """Everything `build_input` reads, as a tuple: a hit costs no input document (the
        time is not in it; an entry expires instead)."""
        headers = check.headers
        return (
            self.revision, path, principal.user_id, principal.customer_id, principal.roles,
            principal.trial_mode, principal.trial_ends_at, principal.plan, check.method,
            check.path_only, check.route.route_id, check.route.gateway_type, check.route.paid_only,
            tuple(headers.get(name) for name in self.headers),
        )  # fmt: skip

    async def decide(self, path: str, check: CheckContext, principal: Principal) -> PolicyDecision:
        engine = self.engine  # the revision is in the key: one for the whole evaluation
        key = self.cache_key(path, check, principal)
        hit = self._cache.get(key)
        if hit is not None:
            return PolicyDecision(path, hit[0], hit[1], cached=True)
        now = self._clock()
        timed = self.build_input(check, principal)
        timed["time"] = {
            "now_ns": int(now * 1_000_000_000),
            "now": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        allow, reason = _read_result(await engine.evaluate(path, timed))
        expires_at = now + self._cache_seconds
        if principal.trial_ends_at is not None and principal.trial_ends_at > now:
            # a cached "allow" must not outlive the trial it depends on
            expires_at = min(expires_at, principal.trial_ends_at)
        self._cache.put(key, (allow, reason), expires_at)
        return PolicyDecision(path, allow, reason, cached=False)


def _read_result(result: Mapping[str, Any] | None) -> tuple[bool, str]:
    if result is None:
        return False, "undefined"  # an undefined decision is a denial (fail closed)
    allow = result.get("allow") is True
    reason = result.get("reason")
    return allow, reason if isinstance(reason, str) else ("allowed" if allow else "denied")


async def evaluate_policy(
    check: CheckContext, principal: Principal, evaluator: PolicyEvaluator
) -> PolicyDecision | Denial | None:
    """None when the route has no policy; the decision when allowed; a 403 denial otherwise."""
    path = check.route.policy_path
    if not path:
        return None
    decision = await evaluator.decide(path, check, principal)
    if decision.allow:
        return decision
    code = _REASON_CODES.get(decision.reason, ErrorCode.POLICY_DENIED)
    detail = _REASON_DETAILS.get(decision.reason, f"denied by policy ({decision.reason[:64]})")
    return Denial(code, Stage.POLICY, detail, extensions={"reason": decision.reason})
