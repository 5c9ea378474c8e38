"""Builds the one AuditRecord per check and hands it to the sink without awaiting anything."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from authz_service import __version__, metrics
from authz_service.audit.record import AuditRecord
from authz_service.check_context import CheckContext
from authz_service.pipeline import CheckOutcome
from authz_service.ports import AuditSink

log = logging.getLogger(__name__)


def audit_record(check: CheckContext, out: CheckOutcome, latency_ms: float) -> AuditRecord:
    principal, denial, budget = out.principal, out.denial, out.budget
    return AuditRecord(
        request_id=check.request_id,
        created_at=datetime.fromtimestamp(check.received_at, UTC),
        decision="allow" if denial is None else ("error" if denial.status >= 500 else "deny"),
        status_code=200 if denial is None else denial.status,
        correlation_id=check.correlation_id,
        causation_id=check.causation_id,
        gateway_type=check.gateway_type or None,
        route_id=check.route_id or None,
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
        budget_metric=check.budget_metric or None,
        budget_cost=budget.cost if budget else None,
        budget_used=budget.used if budget else None,
        budget_limit=budget.limit if budget else None,
        client_ip=check.client_ip,
        user_agent=check.headers.get("user-agent"),
        authz_latency_ms=latency_ms,
        config_revision=check.config_revision,
        service_version=__version__,
        policy_revision=out.policy_revision,
        # shadowed denials ("policy:trial_expired") and stages that failed open
        # ("fail_open:policy:opa"): both would have denied, neither did
        shadow_denials=out.audit_shadow_denials(),
    )


def submit_audit(
    sink: AuditSink, check: CheckContext, out: CheckOutcome, latency_ms: float
) -> None:
    """Never raises into the request path: a refused record is counted and logged."""
    try:
        sink.submit(audit_record(check, out, latency_ms))
    except Exception:
        metrics.AUDIT_SUBMIT_ERRORS.inc()
        log.exception("audit submit failed")
