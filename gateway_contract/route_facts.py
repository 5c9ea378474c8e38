"""What a route tells the authz service on every check: the fact names (context-extension keys)."""

from __future__ import annotations

# The fact names: the context-extension keys, and the keys of the route-metadata encoding.
CTX_GATEWAY_TYPE = "gateway_type"
CTX_ROUTE_ID = "route_id"
CTX_PERMISSION = "permission"
CTX_POLICY = "policy"
CTX_PAID_ONLY = "paid_only"
CTX_BUDGET_METRIC = "budget_metric"
CTX_BUDGET_COST = "budget_cost"
CTX_CONFIG_REVISION = "config_revision"
# Comma-separated stages the route runs in shadow mode (evaluate and record, never deny).
CTX_SHADOW = "shadow"
FACT_NAMES: tuple[str, ...] = (
    CTX_GATEWAY_TYPE,
    CTX_ROUTE_ID,
    CTX_PERMISSION,
    CTX_POLICY,
    CTX_PAID_ONLY,
    CTX_BUDGET_METRIC,
    CTX_BUDGET_COST,
    CTX_CONFIG_REVISION,
    CTX_SHADOW,
)
