"""The policy engine behind a decision cache: the policy stage's PolicyDecider."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

from authz_service.cache import ExpiringLRU
from authz_service.check_context import CheckContext
from authz_service.ports import PolicyDecision, PolicyEngine
from authz_service.principal import Principal


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
