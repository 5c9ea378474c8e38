"""The request path: numbered stages in order, each allowing, denying or shadow-denying."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from authz_service import metrics
from authz_service.check_context import CheckContext
from authz_service.errors import Denial, DependencyUnavailableError, ErrorCode, Stage
from authz_service.ports import BudgetStore, PolicyDecider, PolicyDecision, Verifier
from authz_service.principal import Principal
from authz_service.stages.authenticate import authenticate
from authz_service.stages.authorize import authorize
from authz_service.stages.budget import BudgetResult, consume_budget
from authz_service.stages.decide import Allowance, decide
from authz_service.stages.policy import evaluate_policy
from gateway_contract.runtime import RuntimeConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
# audit `shadow_denials` entries: "<stage>:<code>" for a shadowed denial, and
# "fail_open:<stage>:<dependency>" for a dependency failure let through by a fail-open setting
FAIL_OPEN_PREFIX = "fail_open:"


@dataclass(frozen=True, slots=True)
class StageStep:
    """One stage as it ran: outcome is allow, deny, shadow_deny, fail_open or skip."""

    stage: Stage
    outcome: str
    denial: Denial | None = None


@dataclass(slots=True)
class CheckOutcome:
    """What the pipeline learned; at the end exactly one of `denial` and `allowance` is set."""

    principal: Principal | None = None
    policy: PolicyDecision | None = None
    budget: BudgetResult | None = None
    denial: Denial | None = None
    allowance: Allowance | None = None
    failed_open: list[str] = field(default_factory=list)
    shadow_denials: list[str] = field(default_factory=list)
    steps: list[StageStep] = field(default_factory=list)
    policy_revision: str | None = None

    def audit_shadow_denials(self) -> list[str]:
        return [*self.shadow_denials, *(FAIL_OPEN_PREFIX + f for f in self.failed_open)]


@dataclass(frozen=True, slots=True)
class FailOpen:
    policy: bool = False
    budget: bool = False


class _Passed:
    """Marker: the stage did not deny (it failed open, or its denial was only recorded)."""


_PASSED = _Passed()


class Pipeline:
    def __init__(
        self,
        config: RuntimeConfig,
        verifier: Verifier,
        policy: PolicyDecider,
        budget_store: BudgetStore,
        *,
        max_token_bytes: int,
        fail_open: FailOpen = FailOpen(),
        observe: bool = True,
    ) -> None:
        self.config = config  # replaced whole by a reload; a check reads it once
        self.verifier = verifier
        self.policy = policy
        self.budget_store = budget_store
        self.max_token_bytes = max_token_bytes
        self.fail_open = fail_open
        self._observe = observe  # False for Explain: no metrics from hypothetical requests

    def shadow_of(self, check: CheckContext, config: RuntimeConfig) -> frozenset[str]:
        """Envoy's `shadow` extension when sent, else the runtime config's list for the route."""
        sent = check.route.shadow
        return frozenset(sent if sent is not None else config.shadow_stages(check.route.route_id))

    async def run(self, check: CheckContext, out: CheckOutcome | None = None) -> CheckOutcome:
        """Fill `out` (given by the caller so a timed-out check still shows what was learned)."""
        out = CheckOutcome() if out is None else out
        config, shadow = self.config, self.shadow_of(check, self.config)
        out.policy_revision = self.policy.revision
        # 1. authenticate (a JWKS outage is never failed open)
        auth = authenticate(check, self.verifier, self.max_token_bytes)
        principal = await self._stage(Stage.AUTHENTICATE, auth, out, shadow)
        if isinstance(principal, Denial):
            return out
        if not isinstance(principal, Principal):
            return await self._without_principal(check, out, shadow)
        out.principal = principal
        # 2. authorize (RBAC)
        rbac = authorize(check, principal, config)
        if isinstance(await self._stage(Stage.AUTHORIZE, rbac, out, shadow), Denial):
            return out
        # 3. policy
        policy = await self._stage(
            Stage.POLICY, evaluate_policy(check, principal, self.policy), out, shadow,
            fail_open=self.fail_open.policy,
        )  # fmt: skip
        if isinstance(policy, Denial):
            return out
        out.policy = policy if isinstance(policy, PolicyDecision) else None
        # 4. budget
        budget = await self._stage(
            Stage.BUDGET, consume_budget(check, principal, config.budgets, self.budget_store),
            out, shadow, fail_open=self.fail_open.budget,
        )  # fmt: skip
        if isinstance(budget, Denial):
            return out
        out.budget = budget if isinstance(budget, BudgetResult) else None
        # 5. decide
        return await self._decide(check, out, principal)

    async def _decide(
        self, check: CheckContext, out: CheckOutcome, principal: Principal | None
    ) -> CheckOutcome:
        allowance = await self._stage(
            Stage.DECIDE, decide(check, principal, out.budget), out, frozenset()
        )
        out.allowance = allowance if isinstance(allowance, Allowance) else None
        return out

    async def _without_principal(
        self, check: CheckContext, out: CheckOutcome, shadow: frozenset[str]
    ) -> CheckOutcome:
        """Authentication is shadowed and found nobody: later stages have no one to judge.

        A later stage in shadow mode is skipped (recorded as such in the trace, not as a
        denial); a later stage that applies to the route and is enforced cannot grant anything
        to nobody, so the request is denied with the authentication's own denial (fail closed).
        """
        shadowed = next(s.denial for s in out.steps if s.stage is Stage.AUTHENTICATE)
        applies = {
            Stage.AUTHORIZE: True,
            Stage.POLICY: bool(check.route.policy_path),
            Stage.BUDGET: bool(check.route.budget_metric),
        }
        for stage, applicable in applies.items():
            if applicable and stage.value not in shadow:
                out.denial = shadowed
                out.steps.append(StageStep(stage, "deny", shadowed))
                return out
            out.steps.append(StageStep(stage, "skip"))
        return await self._decide(check, out, None)

    async def _stage(
        self,
        stage: Stage,
        step: Awaitable[T],
        out: CheckOutcome,
        shadow: frozenset[str],
        *,
        fail_open: bool = False,
    ) -> T | Denial | _Passed:
        """Run one stage, time it, apply the dependency-failure rule and the stage's mode.

        Returns a Denial only when it is enforced; a shadowed one is recorded and passes.
        """
        started = time.perf_counter()
        try:
            result: T | Denial | _Passed = await step
        except DependencyUnavailableError as exc:
            result = self._unavailable(stage, exc, out, fail_open=fail_open)
        finally:
            if self._observe:
                metrics.STAGE_LATENCY_OF[stage].observe(time.perf_counter() - started)
        if not isinstance(result, Denial):
            skipped = result is None and stage in {Stage.POLICY, Stage.BUDGET}
            outcome = "fail_open" if result is _PASSED else "skip" if skipped else "allow"
            out.steps.append(StageStep(stage, outcome))
            return result
        if stage.value in shadow:
            out.shadow_denials.append(f"{stage.value}:{result.code.value}")
            out.steps.append(StageStep(stage, "shadow_deny", result))
            if self._observe:
                metrics.SHADOW_DENIALS.labels(stage.value, result.code.value).inc()
            return _PASSED
        out.steps.append(StageStep(stage, "deny", result))
        out.denial = result
        return result

    def _unavailable(
        self, stage: Stage, exc: DependencyUnavailableError, out: CheckOutcome, *, fail_open: bool
    ) -> Denial | _Passed:
        action = "fail_open" if fail_open else "fail_closed"
        if self._observe:
            metrics.DEPENDENCY_ERRORS.labels(exc.dependency, stage.value, action).inc()
        log.warning(
            "dependency unavailable",
            extra={
                "stage": stage.value,
                "dependency": exc.dependency,
                "reason": exc.reason,
                "action": action,
            },
        )
        if fail_open:
            out.failed_open.append(f"{stage.value}:{exc.dependency}")
            return _PASSED
        return Denial(
            ErrorCode.DEPENDENCY_UNAVAILABLE,
            stage,
            f"{exc.dependency} is unavailable; the request cannot be authorized now",
            headers=(("retry-after", "1"),),
        )
