"""Builds the one audit record per check, answered or cancelled, as the row the journal keeps."""

from __future__ import annotations

from typing import Any

from authz_service import __version__
from authz_service.audit.clean import decision_row
from authz_service.audit.record import AuditRecord
from authz_service.check_context import CheckContext
from authz_service.errors import ErrorCode, Stage
from authz_service.pipeline import CheckOutcome
from gateway_contract.access_log import audit_user_agent

# the stages in the order the pipeline runs them: a cancelled check was in the first not done
PIPELINE_ORDER = (Stage.AUTHENTICATE, Stage.AUTHORIZE, Stage.POLICY, Stage.BUDGET, Stage.DECIDE)


def audit_record(check: CheckContext, out: CheckOutcome, latency_ms: float) -> AuditRecord:
    principal, denial, budget = out.principal, out.denial, out.budget
    return AuditRecord(
        request_id=check.request_id,
        decided_at_us=int(check.received_at * 1_000_000),
        decision="allow" if denial is None else ("error" if denial.status >= 500 else "deny"),
        status_code=200 if denial is None else denial.status,
        correlation_id=check.correlation_id,
        causation_id=check.causation_id,
        gateway_type=check.route.gateway_type or None,
        route_id=check.route.route_id or None,
        method=check.method or None,
        path=check.path_only or None,
        denied_stage=denial.stage.value if denial is not None else None,
        problem_type=denial.code.value if denial is not None else None,
        user_id=principal.user_id if principal else None,
        customer_id=principal.customer_id if principal else None,
        roles=list(principal.roles) if principal else [],
        trial_mode=principal.trial_mode if principal else None,
        plan=principal.plan if principal else None,
        opa_decisions=out.policy.audit() if out.policy is not None else None,
        budget_metric=check.route.budget_metric or None,
        budget_cost=budget.cost if budget else None,
        budget_used=budget.used if budget else None,
        budget_limit=budget.limit if budget else None,
        client_ip=check.client_ip,
        user_agent=audit_user_agent(check.headers.get("user-agent")),
        authz_latency_ms=latency_ms,
        config_revision=check.route.config_revision or None,
        service_version=__version__,
        policy_revision=out.policy_revision,
        # shadowed denials ("policy:trial_expired") and stages that failed open
        # ("fail_open:policy:opa"): both would have denied, neither did
        shadow_denials=out.audit_shadow_denials(),
    )


def running_stage(out: CheckOutcome) -> Stage:
    """The stage a check was in when it stopped: the first one it had not finished."""
    finished = {step.stage for step in out.steps}
    return next((stage for stage in PIPELINE_ORDER if stage not in finished), Stage.INTERNAL)


def cancelled_record(check: CheckContext, out: CheckOutcome, latency_ms: float) -> AuditRecord:
    """What a check Envoy gave up on had learned and consumed: never answered.

    The principal when authentication finished, the budget units when the budget stage
    finished; `denied_stage` names the stage that was running (a `budget` there means the
    units may or may not have been charged when the cancellation came).
    """
    record = audit_record(check, out, latency_ms)
    record.decision = "cancelled"
    record.status_code = None
    record.denied_stage = running_stage(out).value
    record.problem_type = ErrorCode.CHECK_CANCELLED.value
    return record


def journal_row(record: AuditRecord) -> dict[str, Any]:
    """The storable row the journal chains and writes (the cleaner logs what it changed)."""
    return decision_row(record)
