"""Derive the authz service's runtime config (runtime.json) and its revision from the config."""

from __future__ import annotations

import hashlib
import json

from gateway_config.models import GatewayConfig, Route
from gateway_contract.http_check import max_check_head_bytes
from gateway_contract.runtime import BudgetCost, GatewayType, PathMatch, RouteRule, RuntimeConfig

# Bumped when the rendering itself changes, so equal inputs with a new renderer differ.
RENDER_FORMAT = "1"


def config_revision(config: GatewayConfig, renderer_digest: str = "") -> str:
    """sha256 over the validated config (includes, overrides and all) and the renderer."""
    canonical = json.dumps(
        {
            "format": RENDER_FORMAT,
            "renderer": renderer_digest,
            "config": config.model_dump(mode="json"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _route_rule(config: GatewayConfig, route: Route) -> RouteRule:
    match = route.match
    return RouteRule(
        gateway_types=tuple(
            dict.fromkeys(config.entry_points[name].gateway_type for name in route.entry_points)
        ),
        methods=match.methods,
        path=PathMatch(prefix=match.prefix, exact=match.path, regex=match.regex),
        permission=route.permission,
        policy=route.policy,
        paid_only=route.paid_only,
        budget=BudgetCost(metric=route.budget.metric, cost=route.budget.units)
        if route.budget
        else None,
        public=route.public,
        # the effective list, so runtime.json reads the same as the route's context extension
        shadow=None if route.shadow is None or route.public else config.shadow_stages(route),
    )


def to_runtime_config(config: GatewayConfig, revision: str) -> RuntimeConfig:
    rbac: dict[GatewayType, dict[str, frozenset[str]]] = {t: {} for t in GatewayType} | {
        gateway_type: {role: frozenset(perms) for role, perms in roles.items()}
        for gateway_type, roles in config.rbac.items()
    }
    return RuntimeConfig(
        revision=revision,
        rbac=rbac,
        routes={route.id: _route_rule(config, route) for route in config.routes},
        budgets=config.budgets,
        shadow=config.shadow.stages(),
        sent_headers=config.authz.check_request_headers(),
        max_check_head_bytes=max_check_head_bytes(config.limits.max_request_headers_kb),
    )
