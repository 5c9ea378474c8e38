"""Render against the contract: the rendered route table is the matcher's, with the same facts.

config/gateway.yaml (plus tests/support/route_cases.py's routes, so every kind of rule is
there) is rendered; for every entry point the route table must list the routes the matcher
tries, in the order it tries them, each with the Envoy match and the facts the contract
defines, in the transport's rendering (gRPC context extensions, or HTTP route metadata).
tests/e2e/test_route_crosscheck.py asks the real Envoy the same question per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from gateway_config import load_gateway_config
from gateway_contract.matcher import ENVOY_PATH_HANDLING, envoy_route_match
from gateway_contract.route_facts import (
    ROUTE_FACTS_KEY,
    ROUTE_FACTS_NAMESPACE,
    RouteFacts,
    facts_of_route,
)
from gateway_contract.runtime import RuntimeConfig, load_runtime_config
from tests.support.route_cases import EXTRA_ROUTES

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"


@pytest.fixture(scope="module", params=["grpc", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, transport: str
) -> tuple[Path, Path, RuntimeConfig]:
    directory = tmp_path_factory.mktemp("crosscheck")
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["routes"] = [*raw["routes"], *EXTRA_ROUTES]
    raw["authz"]["transport"] = transport
    config_path = directory / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = directory / "out"
    render.render_all(config_path, out, create_log_dir=False)
    return config_path, out, load_runtime_config(out / "authz" / "runtime.json")


def _route_table(out: Path, entry: str) -> list[dict[str, Any]]:
    document = yaml.safe_load((out / "envoy" / entry / "rds.yaml").read_text())
    routes: list[dict[str, Any]] = document["resources"][0]["virtual_hosts"][0]["routes"]
    return routes


def test_every_entry_point_tries_the_matchers_routes_in_its_order(
    rendered: tuple[Path, Path, RuntimeConfig],
) -> None:
    config_path, out, runtime = rendered
    for name, entry in load_gateway_config(config_path).entry_points.items():
        names = [route["name"] for route in _route_table(out, name)]
        expected = [
            rid for rid, rule in runtime.routes.items() if entry.gateway_type in rule.gateway_types
        ]
        # Envoy's readiness route comes first, its 404 for anything else last
        assert names == ["readiness", *expected, "no-route"], name


def test_each_rendered_route_has_the_contracts_match_and_facts(
    rendered: tuple[Path, Path, RuntimeConfig], transport: str
) -> None:
    config_path, out, runtime = rendered
    for name, entry in load_gateway_config(config_path).entry_points.items():
        for route in _route_table(out, name)[1:-1]:
            rule = runtime.routes[route["name"]]
            assert route["match"] == envoy_route_match(rule), route["name"]
            per_filter = route.get("typed_per_filter_config", {})
            ext_authz = per_filter.get("envoy.filters.http.ext_authz")
            if rule.public:
                assert ext_authz == {"@type": ext_authz["@type"], "disabled": True}
                assert "metadata" not in route
                continue
            facts = facts_of_route(
                runtime, route["name"], entry.gateway_type, charges_budget=entry.via is None
            )
            if transport == "grpc":
                assert ext_authz["check_settings"]["context_extensions"] == (
                    facts.to_context_extensions()
                ), (name, route["name"])
                continue
            # HTTP: no per-route check settings; the facts ride in the route's metadata
            assert ext_authz is None, (name, route["name"])
            metadata = route["metadata"]["filter_metadata"][ROUTE_FACTS_NAMESPACE]
            assert metadata == {ROUTE_FACTS_KEY: facts.to_route_metadata()}, (name, route["name"])


def test_the_extra_routes_facts_are_what_their_config_says(
    rendered: tuple[Path, Path, RuntimeConfig], transport: str
) -> None:
    _, out, _ = rendered
    exports = {route["name"]: route for route in _route_table(out, "plant")}["exports"]
    if transport == "grpc":
        extensions = exports["typed_per_filter_config"]["envoy.filters.http.ext_authz"][
            "check_settings"
        ]["context_extensions"]
    else:
        metadata = exports["metadata"]["filter_metadata"][ROUTE_FACTS_NAMESPACE]
        extensions = RouteFacts.from_route_metadata(
            metadata[ROUTE_FACTS_KEY]
        ).to_context_extensions()
    assert (extensions["budget_metric"], extensions["budget_cost"]) == ("reports", "2")
    assert (extensions["shadow"], extensions["policy"]) == ("policy", "gateway/authz")
    assert exports["match"] == {"prefix": "/api/v1/exports/"}


def test_every_listener_normalizes_paths_as_the_matcher_expects(
    rendered: tuple[Path, Path, RuntimeConfig],
) -> None:
    _, out, _ = rendered
    for entry in ("plant", "cp", "pp"):
        document = yaml.safe_load((out / "envoy" / entry / "lds.yaml").read_text())
        for listener in document["resources"]:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            assert {key: hcm[key] for key in ENVOY_PATH_HANDLING} == ENVOY_PATH_HANDLING
