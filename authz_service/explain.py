"""Explain: run the pipeline on a hypothetical request with no side effects and trace each stage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authz_service.adapters.fixed_principal import FixedPrincipal
from authz_service.adapters.peeking_budget import PeekingBudgetStore
from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.pipeline import CheckOutcome, Pipeline, StageStep
from authz_service.principal import Principal
from gateway_contract.headers import CORRELATION_HEADER
from gateway_contract.matcher import MatchedRoute, envoy_path, match_route
from gateway_contract.route_facts import RouteFacts, facts_of_route
from gateway_contract.runtime import GatewayType, RuntimeConfig

# the bearer value that stands for development-mode claims (never verified as a token)
CLAIMS_TOKEN = "explain-dev-claims"


@dataclass(frozen=True, slots=True)
class ExplainInput:
    gateway_type: str
    method: str
    path: str
    token: str | None = None
    principal: Principal | None = None  # from development-mode claims
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StageReport:
    stage: str
    outcome: str
    code: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Explanation:
    route_id: str
    allowed: bool
    status: int
    config_revision: str
    policy_revision: str
    stages: list[StageReport] = field(default_factory=list)


class ExplainInputError(ValueError):
    """The Explain request itself is invalid (unknown gateway type, no method or path)."""


class Explainer:
    def __init__(self, pipeline: Pipeline, *, timeout_seconds: float) -> None:
        self._pipeline = pipeline
        self._timeout = timeout_seconds

    async def explain(self, request: ExplainInput) -> Explanation:
        try:
            gateway_type = GatewayType(request.gateway_type.upper())
        except ValueError as exc:
            raise ExplainInputError(f"gateway_type must be PLANT, CP or PP: {exc}") from exc
        if not request.method or not request.path.startswith("/"):
            raise ExplainInputError("method and an absolute path are required")
        live = self._pipeline
        config = live.config
        result = Explanation("", False, 404, config.revision, live.policy.revision)
        # the path as Envoy routes it and sends it to the check (normalized), if it takes it
        path = envoy_path(request.path)
        method = request.method.upper()
        found = None if path is None else match_route(config, gateway_type, method, path)
        if path is None or found is None or found.rule.public:
            result.stages.append(_route_report(result, path, found))
            return result
        # the facts of the hop that charges the budget: Explain shows the budget's state even
        # for a CP/PP hop, whose own check sends none (the PLANT hop behind it charges)
        facts = facts_of_route(config, found.route_id, gateway_type, charges_budget=True)
        check = self._check(request, path, facts)
        out = await self._run(self._hypothetical(request, config), check)
        result.route_id = found.route_id
        result.allowed = out.denial is None
        result.status = 200 if out.denial is None else out.denial.status
        result.stages = [_report(step, out, check, config, live) for step in out.steps]
        return result

    def _hypothetical(self, request: ExplainInput, config: RuntimeConfig) -> Pipeline:
        live = self._pipeline
        verifier = live.verifier if request.principal is None else FixedPrincipal(request.principal)
        return Pipeline(
            config,
            verifier,
            live.policy,
            PeekingBudgetStore(live.budget_store),
            max_token_bytes=live.max_token_bytes,
            fail_open=live.fail_open,
            observe=False,
        )

    @staticmethod
    def _check(request: ExplainInput, path: str, facts: RouteFacts) -> CheckContext:
        headers = {k.lower(): v for k, v in request.headers.items()}
        token = CLAIMS_TOKEN if request.principal is not None else request.token
        if token:
            headers["authorization"] = f"Bearer {token}"
        return CheckContext(
            request_id=f"explain-{uuid.uuid4().hex}",
            correlation_id=headers.get(CORRELATION_HEADER),
            causation_id=None,
            method=request.method.upper(),
            path=path,
            headers=headers,
            route=facts,
            received_at=time.time(),
        )

    async def _run(self, pipeline: Pipeline, check: CheckContext) -> CheckOutcome:
        """As the servicer runs a check: within the timeout, an overrun is a 503."""
        out = CheckOutcome()
        try:
            async with asyncio.timeout(self._timeout):
                await pipeline.run(check, out)
        except TimeoutError:
            out.allowance = None
            out.denial = Denial(
                ErrorCode.DEPENDENCY_UNAVAILABLE, Stage.INTERNAL, "the check did not finish in time"
            )
            out.steps.append(StageStep(Stage.INTERNAL, "deny", out.denial))
        return out


def _route_report(result: Explanation, path: str | None, found: MatchedRoute | None) -> StageReport:
    """The answer Envoy gives without a check: a path it refuses, no route, a public route."""
    if path is None:
        result.status = 400
        return StageReport("route", "deny", "bad_request", "Envoy refuses this path (400)")
    if found is None:
        return StageReport("route", "deny", "route_not_found", "no route matches")
    result.route_id = found.route_id
    result.allowed, result.status = True, 200
    return StageReport("route", "allow", "", "public route: no ext_authz")


def _report(
    step: StageStep, out: CheckOutcome, check: CheckContext, config: RuntimeConfig, live: Pipeline
) -> StageReport:
    denial = step.denial
    report = StageReport(
        step.stage.value,
        step.outcome,
        denial.code.value if denial else "",
        denial.detail if denial else "",
    )
    if denial is not None and denial.extensions:
        report.data["denial"] = dict(denial.extensions)
    principal = out.principal
    if step.stage is Stage.AUTHENTICATE and principal is not None:
        report.data["principal"] = principal.policy_input() | {"issuer": principal.issuer}
    elif step.stage is Stage.AUTHORIZE and principal is not None:
        held = _held(config, check.route.gateway_type, principal)
        report.data |= {"permission_needed": check.route.permission, "permissions_held": held}
    elif step.stage is Stage.POLICY and principal is not None and check.route.policy_path:
        report.data["input"] = live.policy.build_input(check, principal)
        if out.policy is not None:
            report.data["result"] = {"allow": out.policy.allow, "reason": out.policy.reason}
    elif step.stage is Stage.BUDGET and out.budget is not None:
        budget = out.budget
        report.data["budget"] = {
            "metric": budget.metric,
            "cost": budget.cost,
            "used_after": budget.used,
            "limit": budget.limit,
            "remaining_after": budget.remaining,
        }
    elif step.stage is Stage.DECIDE and out.allowance is not None:
        report.data["headers"] = dict(out.allowance.headers)
    return report


def _held(config: RuntimeConfig, gateway_type: str, principal: Principal) -> list[str]:
    try:
        return sorted(config.permissions_of(GatewayType(gateway_type), principal.roles))
    except ValueError:
        return []
