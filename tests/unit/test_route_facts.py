"""Route facts: one definition, two renderings (gRPC context extensions, HTTP route metadata)."""

from __future__ import annotations

import pytest

from gateway_contract.route_facts import (
    FACT_NAMES,
    ROUTE_FACTS_KEY,
    ROUTE_FACTS_NAMESPACE,
    RouteFacts,
    facts_of_route,
    route_facts_formatter,
)
from gateway_contract.runtime import GatewayType, RuntimeConfig

REPORTS = RouteFacts(
    gateway_type="PLANT",
    route_id="reports",
    permission="reports:read",
    policy="gateway/authz",
    paid_only=True,
    budget_metric="reports",
    budget_cost=5,
    config_revision="rev-9",
    shadow=("policy", "budget"),
)
CONFIG = RuntimeConfig.model_validate(
    {
        "revision": "rev-9",
        "rbac": {"PLANT": {}, "CP": {}},
        "routes": {
            "reports": {
                "gateway_types": ["PLANT", "CP"],
                "path": {"prefix": "/api/v1/reports"},
                "permission": "reports:read",
                "policy": "gateway/authz",
                "paid_only": True,
                "budget": {"metric": "reports", "cost": 5},
                "shadow": ["policy", "budget"],
            }
        },
        "shadow": ["authorize"],
    }
)


def test_the_context_extensions_are_every_fact_as_text() -> None:
    assert REPORTS.to_context_extensions() == {
        "gateway_type": "PLANT",
        "route_id": "reports",
        "permission": "reports:read",
        "policy": "gateway/authz",
        "paid_only": "true",
        "budget_metric": "reports",
        "budget_cost": "5",
        "config_revision": "rev-9",
        "shadow": "policy,budget",
    }
    assert tuple(REPORTS.to_context_extensions()) == FACT_NAMES


@pytest.mark.parametrize(
    "facts",
    [REPORTS, RouteFacts("CP", "orders-list", "orders:read", shadow=())],
)
def test_both_renderings_read_back_to_the_same_facts(facts: RouteFacts) -> None:
    assert RouteFacts.from_context_extensions(facts.to_context_extensions()) == facts
    assert RouteFacts.from_route_metadata(facts.to_route_metadata()) == facts


def test_the_route_metadata_is_one_urlencoded_string_without_a_comma() -> None:
    encoded = REPORTS.to_route_metadata()
    assert "," not in encoded
    assert encoded.startswith("budget_cost=5&budget_metric=reports&config_revision=rev-9&")
    assert "shadow=policy%2Cbudget" in encoded


def test_the_header_formatter_reads_the_routes_metadata() -> None:
    assert route_facts_formatter() == (
        f"%METADATA(ROUTE:{ROUTE_FACTS_NAMESPACE}:{ROUTE_FACTS_KEY})%"
    )


@pytest.mark.parametrize("text", ["a=1,b=2", "gateway_type", "route_id=a&route_id", "=x&y"])
def test_malformed_route_metadata_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the check then fails closed
        RouteFacts.from_route_metadata(text)


def test_missing_facts_read_as_what_the_stages_refuse() -> None:
    facts = RouteFacts.from_context_extensions({})
    assert (facts.gateway_type, facts.permission, facts.budget_metric) == ("", "", "")
    assert facts.budget_cost == 1  # unsaid: one unit (only charged when a metric is named)
    assert facts.shadow is None  # unsaid: the runtime config's list applies
    assert facts.config_revision == ""
    assert not facts.paid_only


@pytest.mark.parametrize(("text", "cost"), [("3", 3), ("", 1), ("abc", 0), ("-2", -2)])
def test_the_budget_cost_reads_as_a_number_or_zero(text: str, cost: int) -> None:
    assert RouteFacts.from_context_extensions({"budget_cost": text}).budget_cost == cost


def test_shadow_and_policy_are_read_leniently() -> None:
    facts = RouteFacts.from_context_extensions(
        {"shadow": " policy, ,budget ", "policy": "/gateway/authz/", "paid_only": "TRUE"}
    )
    assert facts.shadow == ("policy", "budget")
    assert facts.policy_path == "gateway/authz"
    assert facts.paid_only


def test_the_charging_hop_sends_the_budget_and_a_forwarding_hop_none() -> None:
    charging = facts_of_route(CONFIG, "reports", GatewayType.PLANT, charges_budget=True)
    assert charging == REPORTS
    forwarding = facts_of_route(CONFIG, "reports", GatewayType.CP, charges_budget=False)
    assert (forwarding.gateway_type, forwarding.budget_metric, forwarding.budget_cost) == (
        "CP",
        "",
        0,
    )
    assert forwarding.shadow == ("policy", "budget")  # the route's own list, not the global one
