"""The audit record the servicer journals, one per check (cancelled ones included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AuditRecord:
    """What the authz service decided for one request; Envoy's access log completes it later."""

    request_id: str
    decided_at_us: int  # when the check arrived, microseconds since the epoch
    decision: str  # "allow" | "deny" | "error" | "cancelled"
    status_code: int | None  # the status the authz service decided (None: never answered)
    correlation_id: str | None = None
    causation_id: str | None = None
    gateway_type: str | None = None
    route_id: str | None = None
    method: str | None = None
    path: str | None = None
    # the stage that denied; for a cancelled check, the stage that was running
    denied_stage: str | None = None
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
