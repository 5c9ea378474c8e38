"""Generated requests for the Explain-equals-Check property tests (unit and integration)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as ext
from hypothesis import strategies as st

from authz_service.devtokens import sign_dev_token
from tests.support.check_requests import check_request as build_check_request

# routes of every match kind; a trial budget small enough to run out during a test
RUNTIME: dict[str, Any] = {
    "revision": "prop-1",
    "rbac": {
        "PLANT": {"admin": ["*"], "customer": ["orders:read", "reports:read"], "ops": ["orders:*"]},
        "CP": {"customer": ["orders:read"]},
        "PP": {"admin": ["*"]},
    },
    "routes": {
        "health": {"gateway_types": ["PLANT", "CP", "PP"], "methods": ["GET"],
                   "path": {"exact": "/health"}, "public": True},
        "orders-list": {"gateway_types": ["PLANT", "CP"], "methods": ["GET"],
                        "path": {"prefix": "/api/v1/orders"}, "permission": "orders:read",
                        "policy": "gateway/authz", "budget": {"metric": "api_calls", "cost": 1}},
        "orders-write": {"gateway_types": ["PLANT", "CP", "PP"], "methods": ["POST", "PUT"],
                         "path": {"regex": "/api/v1/orders/[0-9]+"}, "permission": "orders:write",
                         "policy": "gateway/authz", "paid_only": True},
        "reports": {"gateway_types": ["PLANT", "PP"], "methods": [],
                    "path": {"exact": "/api/v1/reports"}, "permission": "reports:read",
                    "budget": {"metric": "reports", "cost": 2}, "shadow": ["policy", "budget"]},
    },
    "budgets": {
        "plans": {"trial": {"api_calls": {"day": 3}, "reports": {"day": 4}},
                  "standard": {"api_calls": {"day": 1000}, "reports": {"day": 1000}}},
        "overrides": {},
    },
}  # fmt: skip
PATHS = (
    "/health", "/api/v1/orders", "/api/v1/orders/7", "/api/v1/ordersx", "/api/v1/orders/7/x",
    "/api/v1/reports", "/api/v1/reports/1", "/nothing", "/api/v1/orders?page=2",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    gateway_type: str
    method: str
    path: str
    roles: tuple[str, ...]
    customer: str
    trial: bool
    trial_ended: bool
    with_token: bool


cases = st.builds(
    Case,
    gateway_type=st.sampled_from(("PLANT", "CP", "PP")),
    method=st.sampled_from(("GET", "POST", "PUT", "DELETE")),
    path=st.sampled_from(PATHS),
    roles=st.lists(st.sampled_from(("admin", "customer", "ops", "guest")), max_size=2).map(tuple),
    customer=st.sampled_from(("cust-a", "cust-b")),
    trial=st.booleans(),
    trial_ended=st.booleans(),
    with_token=st.sampled_from((True, True, True, False)),
)


def token_for(case: Case, secret: str, issuer: str, audience: str) -> str | None:
    if not case.with_token:
        return None
    ends = int(time.time()) + (-60 if case.trial_ended else 3600) if case.trial else None
    return sign_dev_token(
        secret, issuer, audience, f"user-{case.customer}", list(case.roles), case.customer,
        "trial" if case.trial else "standard", case.trial, trial_ends_at=ends,
    )  # fmt: skip


def rendered_context(route_id: str, gateway_type: str) -> dict[str, str]:
    """What the rendered Envoy route sends (gateway_config/envoy_view.py), for a hop that
    charges the budget; written out here rather than taken from the code under test."""
    rule = RUNTIME["routes"][route_id]
    budget = rule.get("budget")
    return {
        "gateway_type": gateway_type,
        "route_id": route_id,
        "permission": rule.get("permission", ""),
        "policy": rule.get("policy", ""),
        "paid_only": "true" if rule.get("paid_only") else "false",
        "budget_metric": budget["metric"] if budget else "",
        "budget_cost": str(budget["cost"]) if budget else "0",
        "config_revision": RUNTIME["revision"],
        "shadow": ",".join(rule.get("shadow", [])),
    }


def check_request(case: Case, route_id: str, token: str | None) -> ext.CheckRequest:
    return build_check_request(
        method=case.method,
        path=case.path,
        token=token,
        headers={"x-request-id": f"req-{time.monotonic_ns()}"},
        context=rendered_context(route_id, case.gateway_type),
    )


def expected_route(case: Case) -> str | None:
    """The route Envoy picks, from the Envoy semantics written out by hand."""
    path = case.path.split("?")[0]
    table = [
        ("health", ("PLANT", "CP", "PP"), ("GET",), path == "/health"),
        ("orders-list", ("PLANT", "CP"), ("GET",),
         path == "/api/v1/orders" or path.startswith("/api/v1/orders/")),
        ("orders-write", ("PLANT", "CP", "PP"), ("POST", "PUT"),
         path == "/api/v1/orders/7"),
        ("reports", ("PLANT", "PP"), ("GET", "POST", "PUT", "DELETE"), path == "/api/v1/reports"),
    ]  # fmt: skip
    for route_id, types, methods, matched in table:
        if case.gateway_type in types and case.method in methods and matched:
            return route_id
    return None
