"""The request path: numbered stages in order, each allowing or returning a denial."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from authz_service import metrics
from authz_service.check_context import CheckContext
from authz_service.errors import Denial, DependencyUnavailableError, ErrorCode, Stage
from authz_service.ports import BudgetStore
from authz_service.principal import Principal
from authz_service.runtime_config import RuntimeConfig
from authz_service.stages.authenticate import authenticate
from authz_service.stages.authorize import authorize
from authz_service.stages.budget import BudgetResult, consume_budget
from authz_service.stages.decide import Allowance, decide
from authz_service.stages.policy import PolicyDecision, PolicyEvaluator, evaluate_policy
from authz_service.tokens import TokenVerifier

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class CheckOutcome:
    """What the pipeline learned; at the end exactly one of `denial` and `allowance` is set."""

    principal: Principal | None = None
    policy: PolicyDecision | None = None
    budget: BudgetResult | None = None
    denial: Denial | None = None
    allowance: Allowance | None = None
    failed_open: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FailOpen:
    policy: bool = False
    budget: bool = False


class _FailedOpen:
    """Marker: the dependency failed and the stage is configured to let the request through."""


_FAILED_OPEN = _FailedOpen()


class Pipeline:
    def __init__(
        self,
        config: RuntimeConfig,
        verifier: TokenVerifier,
        policy: PolicyEvaluator,
        budget_store: BudgetStore,
        *,
        max_token_bytes: int,
        fail_open: FailOpen = FailOpen(),
    ) -> None:
        self.config = config
        self._verifier = verifier
        self._policy = policy
        self._budget = budget_store
        self._max_token_bytes = max_token_bytes
        self._fail_open = fail_open

    async def run(self, check: CheckContext, out: CheckOutcome | None = None) -> CheckOutcome:
        """Fill `out` (given by the caller so a timed-out check still shows what was learned)."""
        out = CheckOutcome() if out is None else out
        # 1. authenticate (a JWKS outage is never failed open)
        principal = await self._stage(
            Stage.AUTHENTICATE,
            authenticate(check, self._verifier, self._max_token_bytes),
            out,
            fail_open=False,
        )
        if not isinstance(principal, Principal):
            return out
        out.principal = principal
        # 2. authorize (RBAC)
        if (
            await self._stage(Stage.AUTHORIZE, authorize(check, principal, self.config), out)
            is not None
        ):
            return out
        # 3. policy
        policy = await self._stage(
            Stage.POLICY,
            evaluate_policy(check, principal, self._policy),
            out,
            fail_open=self._fail_open.policy,
        )
        if isinstance(policy, Denial):
            return out
        out.policy = policy if isinstance(policy, PolicyDecision) else None
        # 4. budget
        budget = await self._stage(
            Stage.BUDGET,
            consume_budget(check, principal, self.config.budgets, self._budget),
            out,
            fail_open=self._fail_open.budget,
        )
        if isinstance(budget, Denial):
            return out
        out.budget = budget if isinstance(budget, BudgetResult) else None
        # 5. decide
        allowance = await self._stage(
            Stage.DECIDE, decide(check, principal, out.policy, out.budget), out
        )
        out.allowance = allowance if isinstance(allowance, Allowance) else None
        return out

    async def _stage(
        self, stage: Stage, step: Awaitable[T], out: CheckOutcome, *, fail_open: bool = False
    ) -> T | Denial | _FailedOpen:
        """Run one stage, time it, record a denial, and apply the dependency-failure rule."""
        started = time.perf_counter()
        try:
            result: T | Denial | _FailedOpen = await step
        except DependencyUnavailableError as exc:
            action = "fail_open" if fail_open else "fail_closed"
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
                result = _FAILED_OPEN
            else:
                result = Denial(
                    ErrorCode.DEPENDENCY_UNAVAILABLE,
                    stage,
                    f"{exc.dependency} is unavailable; the request cannot be authorized now",
                    headers=(("retry-after", "1"),),
                )
        finally:
            metrics.STAGE_LATENCY.labels(stage.value).observe(time.perf_counter() - started)
        if isinstance(result, Denial):
            out.denial = result
        return result
