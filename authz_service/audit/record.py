"""The audit record the pipeline hands to the audit sink, one per checked request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class AuditRecord:
    """What the authz service decided for one request; the access log completes it later."""

    request_id: str
    created_at: datetime
    decision: str  # "allow" | "deny" | "error"
    status_code: int  # the status the authz service decided (200 when allowed)
    correlation_id: str | None = None
    causation_id: str | None = None
    gateway_type: str | None = None
    route_id: str | None = None
    method: str | None = None
    path: str | None = None
    denied_stage: str | None = None  # authenticate | authorize | policy | budget
    problem_type: str | None = None  # the stable error code, e.g. "token_expired"
    user_id: str | None = None
    customer_id: str | None = None
    roles: list[str] = field(default_factory=list)
    trial_mode: bool | None = None
    plan: str | None = None
    opa_decisions: dict[str, Any] | None = None
    budget_metric: str | None = None
    budget_cost: int | None = None
    budget_used: int | None = None
    budget_limit: int | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    authz_latency_ms: float | None = None
    config_revision: str | None = None
    policy_revision: str | None = None  # sha256 of the policies that decided
    service_version: str | None = None
    shadow_denials: list[str] = field(default_factory=list)


@dataclass(slots=True)  # not frozen: its __init__ would pay object.__setattr__ per field
class AccessLogCompletion:
    """What Envoy finally answered for a request, joined to its audit row by request id."""

    request_id: str
    status_code: int
    total_duration_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    upstream_cluster: str | None = None
    response_flags: str | None = None
    started_at: datetime | None = None  # Envoy's start time; dates a row made before its decision
    completed_at: datetime | None = None  # when the access log arrived (the writer fills it)
