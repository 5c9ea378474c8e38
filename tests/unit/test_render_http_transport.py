"""`authz.transport: http`: Envoy's ext_authz `http_service`, the route facts from route
metadata (one definition with the gRPC context extensions), the same headers either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from gateway_config import ConfigError, load_gateway_config
from gateway_contract.access_log import log_format
from gateway_contract.headers import (
    DECISION_HEADER,
    DENIAL_CLIENT_HEADERS,
    IDENTITY_HEADERS,
    PEER_HEADER,
    ROUTE_FACTS_HEADER,
)
from gateway_contract.http_check import HTTP_CHECK_PATH_PREFIX
from gateway_contract.route_facts import ROUTE_FACTS_KEY, ROUTE_FACTS_NAMESPACE, RouteFacts
from gateway_contract.runtime import load_runtime_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
ENTRIES = ("plant", "cp", "pp")
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _render(directory: Path, transport: str | None) -> Path:
    overrides = {} if transport is None else {"authz": {"transport": transport}}
    render.render_all(EXAMPLE, directory, overrides=overrides)
    return directory


@pytest.fixture(scope="module")
def http_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(tmp_path_factory.mktemp("http"), "http")


@pytest.fixture(scope="module")
def grpc_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(tmp_path_factory.mktemp("grpc"), None)


def _resources(out: Path, entry: str, kind: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = yaml.safe_load(
        (out / "envoy" / entry / f"{kind}.yaml").read_text()
    )["resources"]
    return resources


def _hcms(out: Path, entry: str) -> list[dict[str, Any]]:
    return [
        listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in _resources(out, entry, "lds")
    ]


def _ext_authz(hcm: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = next(
        f["typed_config"] for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ
    )
    return config


def _routes(out: Path, entry: str) -> dict[str, dict[str, Any]]:
    host = _resources(out, entry, "rds")[0]["virtual_hosts"][0]
    return {route["name"]: route for route in host["routes"]}


def _patterns(matcher: dict[str, Any]) -> list[str]:
    return [pattern["exact"] for pattern in matcher["patterns"]]


def test_grpc_stays_the_default() -> None:
    assert load_gateway_config(EXAMPLE).authz.transport == "grpc"


@pytest.mark.parametrize("entry", ENTRIES)
def test_http_service_sends_checks_fail_closed_with_the_facts_from_route_metadata(
    http_out: Path, entry: str
) -> None:
    for hcm in _hcms(http_out, entry):
        ext_authz = _ext_authz(hcm)
        assert "grpc_service" not in ext_authz
        service = ext_authz["http_service"]
        assert service["server_uri"]["cluster"] == "authz"
        assert service["server_uri"]["timeout"] == "0.250s"
        assert service["path_prefix"] == HTTP_CHECK_PATH_PREFIX
        assert (ext_authz["failure_mode_allow"], ext_authz["status_on_error"]) == (
            False,
            {"code": "ServiceUnavailable"},
        )
        added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
        assert added == {
            ROUTE_FACTS_HEADER: f"%METADATA(ROUTE:{ROUTE_FACTS_NAMESPACE}:{ROUTE_FACTS_KEY})%",
            PEER_HEADER: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        }
        answer = service["authorization_response"]
        assert _patterns(answer["allowed_upstream_headers"]) == list(IDENTITY_HEADERS)
        assert _patterns(answer["allowed_client_headers"]) == list(DENIAL_CLIENT_HEADERS)
        assert _patterns(answer["dynamic_metadata_from_headers"]) == [DECISION_HEADER]


@pytest.mark.parametrize("entry", ENTRIES)
def test_both_transports_send_exactly_the_headers_the_service_reads(
    http_out: Path, grpc_out: Path, entry: str
) -> None:
    sent = list(load_gateway_config(EXAMPLE).authz.check_request_headers())
    for out in (http_out, grpc_out):
        for hcm in _hcms(out, entry):
            assert _patterns(_ext_authz(hcm)["allowed_headers"]) == sent
            assert ROUTE_FACTS_HEADER not in sent, "never copied from the client"


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_route_facts_are_the_grpc_context_extensions(
    http_out: Path, grpc_out: Path, entry: str
) -> None:
    http_routes, grpc_routes = _routes(http_out, entry), _routes(grpc_out, entry)
    checked = 0
    for name, route in grpc_routes.items():
        per_route = route.get("typed_per_filter_config", {}).get(EXT_AUTHZ, {})
        if "check_settings" not in per_route:
            assert "metadata" not in http_routes[name], f"{name}: public, no facts"
            continue
        context = dict(per_route["check_settings"]["context_extensions"])
        facts = http_routes[name]["metadata"]["filter_metadata"][ROUTE_FACTS_NAMESPACE]
        read = RouteFacts.from_route_metadata(facts[ROUTE_FACTS_KEY])
        assert read.to_route_metadata() == facts[ROUTE_FACTS_KEY], "nothing but the facts"
        decoded = read.to_context_extensions()
        # the revision follows the transport (a rendered input); all else is the same map
        assert (
            decoded.pop("config_revision")
            == load_runtime_config(http_out / "authz" / "runtime.json").revision
        )
        context.pop("config_revision")
        assert decoded == context
        assert EXT_AUTHZ not in http_routes[name].get("typed_per_filter_config", {})
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("entry", ENTRIES)
def test_public_routes_still_skip_the_check(http_out: Path, entry: str) -> None:
    routes = _routes(http_out, entry)
    for name in ("health", "readiness", "no-route"):
        assert routes[name]["typed_per_filter_config"][EXT_AUTHZ]["disabled"] is True
        assert "metadata" not in routes[name]


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_authz_cluster_is_http1_with_an_idle_timeout(http_out: Path, entry: str) -> None:
    authz = next(c for c in _resources(http_out, entry, "cds") if c["name"] == "authz")
    options = authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http_protocol_options" in options["explicit_http_config"]
    assert options["common_http_protocol_options"]["idle_timeout"] == "60s"


@pytest.mark.parametrize("entry", ENTRIES)
def test_spoofed_identity_headers_are_stripped_before_either_check(
    http_out: Path, grpc_out: Path, entry: str
) -> None:
    """The Lua filter that strips them runs before ext_authz, whichever the transport."""
    for out in (http_out, grpc_out):
        for hcm in _hcms(out, entry):
            names = [f["name"] for f in hcm["http_filters"]]
            assert names.index("envoy.filters.http.lua") < names.index(EXT_AUTHZ)
            lua = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
            for header in IDENTITY_HEADERS:
                if header != "x-correlation-id":  # replaced, not stripped
                    assert f'"{header}"' in lua


def test_the_access_log_reads_the_decision_where_each_transport_leaves_it(
    http_out: Path, grpc_out: Path
) -> None:
    for out, transport in ((http_out, "http"), (grpc_out, "grpc")):
        hcm = _hcms(out, "plant")[0]
        file_log = next(a for a in hcm["access_log"] if a["name"] == "envoy.access_loggers.file")
        fields = file_log["typed_config"]["log_format"]["json_format"]
        expected = log_format("PLANT", "", "", transport=transport)["authz_decision"]
        assert fields["authz_decision"] == expected
        assert (DECISION_HEADER in expected) is (transport == "http")


def test_an_unknown_transport_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"authz\.transport"):
        render.render_all(EXAMPLE, tmp_path, overrides={"authz": {"transport": "grpc-web"}})
