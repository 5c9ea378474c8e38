"""The rendered Envoy configs and runtime.json carry what the authz service and tests rely on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from gateway_contract.headers import IDENTITY_HEADERS
from gateway_contract.http_check import HTTP_UNAVAILABLE_STATUS
from gateway_contract.runtime import BudgetSubject, GatewayType, load_runtime_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
ENTRIES = ("plant", "cp", "pp")
CONTEXT_KEYS = {
    "gateway_type",
    "route_id",
    "permission",
    "policy",
    "paid_only",
    "budget_metric",
    "budget_cost",
    "config_revision",
    "shadow",
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("render")
    render.render_all(EXAMPLE, directory)
    return directory


def _resources(out: Path, entry: str, kind: str) -> list[dict[str, Any]]:
    document = yaml.safe_load((out / "envoy" / entry / f"{kind}.yaml").read_text())
    resources: list[dict[str, Any]] = document["resources"]
    return resources


def _hcm(out: Path, entry: str, listener_name: str | None = None) -> dict[str, Any]:
    """The connection manager of an entry point's public listener (or of `listener_name`)."""
    listeners = {listener["name"]: listener for listener in _resources(out, entry, "lds")}
    listener = listeners[listener_name or entry]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def _lua(out: Path, entry: str, listener_name: str | None = None) -> str:
    filters = {
        f["name"]: f["typed_config"] for f in _hcm(out, entry, listener_name)["http_filters"]
    }
    code: str = filters["envoy.filters.http.lua"]["default_source_code"]["inline_string"]
    return code


def _routes(out: Path, entry: str) -> dict[str, dict[str, Any]]:
    virtual_host = _resources(out, entry, "rds")[0]["virtual_hosts"][0]
    return {route["name"]: route for route in virtual_host["routes"]}


def _filter(out: Path, entry: str, name: str) -> dict[str, Any]:
    filters: dict[str, dict[str, Any]] = {
        f["name"]: f["typed_config"] for f in _hcm(out, entry)["http_filters"]
    }
    return filters[name]


def test_writes_the_contract_files(out: Path) -> None:
    for entry in ENTRIES:
        assert (out / "envoy" / f"{entry}.yaml").is_file()
        for kind in ("lds", "cds", "rds"):
            assert (out / "envoy" / entry / f"{kind}.yaml").is_file()
    runtime = load_runtime_config(out / "authz" / "runtime.json")
    assert re.fullmatch(r"[0-9a-f]{64}", runtime.revision)
    assert set(runtime.rbac) == set(GatewayType)
    assert runtime.routes["orders-list"].budget is not None
    assert runtime.routes["orders-list"].budget.cost == 1
    assert runtime.routes["admin"].gateway_types == (GatewayType.PLANT, GatewayType.PP)
    assert runtime.routes["health"].public
    acme, someone = BudgetSubject("customer", "cust-acme"), BudgetSubject("customer", "cust-x")
    assert runtime.budgets.limit("trial", someone, "api_calls", "day") == 100
    assert runtime.budgets.limit("standard", acme, "api_calls", "day") == 50000
    # a user whose sub is the customer's id is another subject: the plan's limit
    impostor = BudgetSubject("user", "cust-acme")
    assert runtime.budgets.limit("trial", impostor, "api_calls", "day") == 100


def test_revision_is_stable_and_follows_the_config(tmp_path: Path) -> None:
    first = render.render_all(EXAMPLE, tmp_path / "a").revision
    again = render.render_all(EXAMPLE, tmp_path / "b").revision
    changed = render.render_all(
        EXAMPLE, tmp_path / "c", overrides={"authz": {"timeout_ms": 300}}
    ).revision
    assert first == again != changed
    rds = (tmp_path / "c" / "envoy" / "plant" / "rds.yaml").read_text()
    assert changed in rds


def test_admin_listens_on_loopback_only(out: Path) -> None:
    for entry in ENTRIES:
        bootstrap = yaml.safe_load((out / "envoy" / f"{entry}.yaml").read_text())
        assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_ext_authz_is_grpc_v3_fail_closed(out: Path) -> None:
    for entry in ENTRIES:
        ext_authz = _filter(out, entry, "envoy.filters.http.ext_authz")
        assert ext_authz["transport_api_version"] == "V3"
        assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
        assert ext_authz["failure_mode_allow"] is False
        assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
        assert ext_authz["include_peer_certificate"] is False
        assert ext_authz["grpc_service"]["timeout"] == "0.250s"
        authz = next(c for c in _resources(out, entry, "cds") if c["name"] == "authz")
        protocol = authz["typed_extension_protocol_options"]
        options = protocol["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]


def test_request_header_filter_runs_before_ext_authz(out: Path) -> None:
    for entry in ENTRIES:
        names = [f["name"] for f in _hcm(out, entry)["http_filters"]]
        assert names.index("envoy.filters.http.lua") < names.index("envoy.filters.http.ext_authz")
        assert names[-1] == "envoy.filters.http.router"


LISTENERS = [("plant", "plant"), ("plant", "plant_internal"), ("cp", "cp"), ("pp", "pp")]


@pytest.mark.parametrize(("entry", "listener"), LISTENERS)
def test_every_identity_header_is_dropped_or_replaced(out: Path, entry: str, listener: str) -> None:
    lua = _lua(out, entry, listener)
    strip_line = next(line for line in lua.splitlines() if line.startswith("local STRIP"))
    for header in IDENTITY_HEADERS:
        if header == "x-correlation-id":
            assert 'headers:replace("x-correlation-id"' in lua
        else:
            assert f'"{header}"' in strip_line
    # no client sets the causation id: only the internal listener, for hops, keeps one
    assert ('"x-causation-id"' in strip_line) == (listener != "plant_internal")


def test_only_the_entry_point_others_forward_to_has_an_internal_listener(out: Path) -> None:
    names = {entry: [r["name"] for r in _resources(out, entry, "lds")] for entry in ENTRIES}
    assert names == {"plant": ["plant", "plant_internal"], "cp": ["cp"], "pp": ["pp"]}
    internal = {r["name"]: r for r in _resources(out, "plant", "lds")}["plant_internal"]
    assert internal["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8190}
    # the same routes and checks as the public listener: only the trust in x-causation-id differs
    public, hop = _hcm(out, "plant"), _hcm(out, "plant", "plant_internal")
    assert hop["rds"] == public["rds"]
    assert [f["name"] for f in hop["http_filters"]] == [f["name"] for f in public["http_filters"]]


@pytest.mark.parametrize(("entry", "listener"), LISTENERS)
def test_the_lua_filter_refuses_unrouted_methods_and_long_targets(
    out: Path, entry: str, listener: str
) -> None:
    lua = _lua(out, entry, listener)
    methods = next(line for line in lua.splitlines() if line.startswith("local METHODS"))
    assert re.findall(r"(\w+) = true", methods) == [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"
    ]  # fmt: skip
    assert "local MAX_PATH_BYTES = 4096" in lua
    assert '[":status"] = "501"' in lua
    assert '[":status"] = "414"' in lua
    # only the hop that reaches the upstreams replaces their error bodies
    assert ("function envoy_on_response" in lua) == (entry == "plant")


def test_path_hardening_and_request_ids(out: Path) -> None:
    for entry in ENTRIES:
        hcm = _hcm(out, entry)
        assert hcm["normalize_path"] is True
        assert hcm["merge_slashes"] is True
        assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
        assert hcm["generate_request_id"] is True
        assert hcm["preserve_external_request_id"] is False
        assert hcm["max_request_headers_kb"] == 60
        assert (hcm["request_headers_timeout"], hcm["request_timeout"]) == ("10.000s", "60.000s")


def test_non_public_routes_carry_the_context_extensions(out: Path) -> None:
    revision = load_runtime_config(out / "authz" / "runtime.json").revision
    for entry, gateway_type in zip(ENTRIES, ("PLANT", "CP", "PP"), strict=True):
        routes = _routes(out, entry)
        per_route = routes["orders-list"]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        extensions = per_route["check_settings"]["context_extensions"]
        assert set(extensions) == CONTEXT_KEYS
        assert all(isinstance(v, str) for v in extensions.values())
        assert extensions["gateway_type"] == gateway_type
        assert extensions["route_id"] == "orders-list"
        assert extensions["permission"] == "orders:read"
        assert extensions["config_revision"] == revision
        assert extensions["shadow"] == ""  # the example config enforces every stage
        reports = routes["reports"]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        assert reports["check_settings"]["context_extensions"]["policy"] == "gateway/authz"
        assert reports["check_settings"]["context_extensions"]["paid_only"] == "true"


def test_budget_is_charged_only_by_the_hop_that_reaches_the_backend(out: Path) -> None:
    for entry, metric, cost in (("plant", "reports", "5"), ("cp", "", "0"), ("pp", "", "0")):
        route = _routes(out, entry)["reports"]
        extensions = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"][
            "check_settings"
        ]["context_extensions"]
        assert (extensions["budget_metric"], extensions["budget_cost"]) == (metric, cost)


def test_public_readiness_and_unknown_routes_skip_authz(out: Path) -> None:
    for entry in ENTRIES:
        routes = _routes(out, entry)
        for name in ("health", "api-status", "readiness", "no-route"):
            per_route = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
            assert per_route["disabled"] is True
            assert "check_settings" not in per_route
        assert list(routes)[-1] == "no-route"
        assert routes["no-route"]["direct_response"]["status"] == 404


def test_routes_follow_their_entry_points(out: Path) -> None:
    assert "admin" in _routes(out, "plant")
    assert "admin" in _routes(out, "pp")
    assert "admin" not in _routes(out, "cp")


def test_cp_and_pp_forward_to_plant_with_their_request_id_as_causation(out: Path) -> None:
    plant_port = yaml.safe_load(EXAMPLE.read_text())["entry_points"]["plant"]["internal"]["port"]
    for entry in ("cp", "pp"):
        clusters = {c["name"]: c for c in _resources(out, entry, "cds")}
        assert set(clusters) == {"authz", "gateway_plant"}
        endpoint = clusters["gateway_plant"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == plant_port
        virtual_host = _resources(out, entry, "rds")[0]["virtual_hosts"][0]
        added = {
            h["header"]["key"]: h["header"]["value"] for h in virtual_host["request_headers_to_add"]
        }
        assert added == {"x-causation-id": "%REQ(x-request-id)%"}
        assert {r["route"]["cluster"] for r in virtual_host["routes"] if "route" in r} == {
            "gateway_plant"
        }


def test_backend_is_health_checked_and_routes_have_timeouts(out: Path) -> None:
    backend = next(c for c in _resources(out, "plant", "cds") if c["name"] == "backend")
    assert backend["health_checks"][0]["http_health_check"]["path"] == "/health"
    assert backend["connect_timeout"] == "0.500s"
    routes = _routes(out, "plant")
    assert routes["reports"]["route"]["timeout"] == "10.000s"
    assert routes["orders-list"]["match"]["path_separated_prefix"] == "/api/v1/orders"
    methods = routes["orders-list"]["match"]["headers"][0]
    assert methods == {"name": ":method", "string_match": {"safe_regex": {"regex": "^(GET)$"}}}


def test_envoy_errors_become_problem_json_but_authz_denials_keep_their_body(out: Path) -> None:
    for entry, listener in LISTENERS:
        restore, *mappers = _hcm(out, entry, listener)["local_reply_config"]["mappers"]
        # first: the HTTP transport's 503 denials get their status back, their body kept
        assert restore["status_code"] == 503
        assert "body_format_override" not in restore
        condition = restore["filter"]["extension_filter"]["typed_config"]["expression"]
        assert f"response.code == {HTTP_UNAVAILABLE_STATUS}" in condition
        assert "ext_authz_denied" in condition
        statuses = {m["body_format_override"]["json_format"]["status"] for m in mappers}
        assert {400, 404, 408, 413, 414, 426, 431, 500, 501, 502, 503, 504} <= statuses
        assert mappers[-1]["body_format_override"]["json_format"]["status"] == "%RESPONSE_CODE%"
        for mapper in mappers:
            body = mapper["body_format_override"]
            assert body["content_type"] == "application/problem+json"
            # the same ids as the access-log line, so a client can quote what the audit row has
            gateway_type = entry.upper()
            assert body["json_format"]["correlation_id"] == render.correlation_id_expression(
                gateway_type
            )
            assert body["json_format"]["request_id"] == render.request_key_expression(gateway_type)
            expression = mapper["filter"]["extension_filter"]["typed_config"]["expression"]
            assert any(
                known in expression
                for known in ("ext_authz_denied", "ext_authz_error", "lua_response",
                              "upgrade_failed", "absolute_path_rejected")
            ), expression  # fmt: skip


def test_access_logs_go_to_stdout_and_to_a_file_per_entry_point(out: Path) -> None:
    logs = {log["name"]: log for log in _hcm(out, "cp")["access_log"]}
    assert set(logs) == {"envoy.access_loggers.stdout", "envoy.access_loggers.file"}
    stdout = logs["envoy.access_loggers.stdout"]["typed_config"]["log_format"]["json_format"]
    assert stdout["correlation_id"] == render.correlation_id_expression("CP")
    audit = logs["envoy.access_loggers.file"]
    assert Path(audit["typed_config"]["path"]).is_absolute()
    assert audit["typed_config"]["path"] == str(Path("var/access-logs/cp.log").resolve())
    line = audit["typed_config"]["log_format"]["json_format"]
    assert line["gateway_type"] == "CP"
    assert (line["request_id"], line["correlation_id"]) == (
        render.request_key_expression("CP"),
        render.correlation_id_expression("CP"),
    )
    for field in ("route_id", "method", "path", "status_code", "response_code_details",
                  "response_flags", "started_at", "duration_us", "upstream_duration_us",
                  "request_bytes", "response_bytes", "upstream_host", "client_ip", "user_agent",
                  "authz_decision"):  # fmt: skip
        assert field in line
    # CP sets x-causation-id for the hop it forwards to, and accepted none: it logs none
    assert "causation_id" not in line
    logs = _hcm(out, "plant")["access_log"]
    plant = next(log for log in logs if log["name"] == "envoy.access_loggers.file")
    assert plant["typed_config"]["log_format"]["json_format"]["causation_id"] == (
        "%REQ(x-causation-id)%"
    )
    assert "%6f" in line["started_at"]  # microseconds
    # health-check traffic (other hops probing the readiness route) is left out
    expression = audit["filter"]["extension_filter"]["typed_config"]["expression"]
    assert "readiness" in expression
    assert _routes(out, "cp")["readiness"]["direct_response"]["status"] == 200


def test_the_shipper_gets_a_manifest_of_the_access_logs(out: Path) -> None:
    manifest = json.loads((out / "audit" / "access_logs.json").read_text())["access_logs"]
    assert [(e["name"], e["gateway_type"]) for e in manifest] == [
        ("plant", "PLANT"), ("cp", "CP"), ("pp", "PP"),
    ]  # fmt: skip
    files = {log["name"]: log for log in _hcm(out, "pp")["access_log"]}
    pp = next(e for e in manifest if e["name"] == "pp")
    assert pp["path"] == files["envoy.access_loggers.file"]["typed_config"]["path"]
    assert pp["admin"] == "127.0.0.1:9903"


def test_the_access_log_directory_is_the_configs_and_exists_after_render(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    render.render_all(EXAMPLE, tmp_path / "out", {"audit": {"access_log_dir": str(logs)}})
    assert logs.is_dir()
    listener = yaml.safe_load((tmp_path / "out" / "envoy" / "plant" / "lds.yaml").read_text())
    hcm = listener["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    paths = [log["typed_config"].get("path") for log in hcm["access_log"]]
    assert str(logs / "plant.log") in paths


def _allowed_headers(out: Path, entry: str) -> list[str]:
    ext_authz = _filter(out, entry, "envoy.filters.http.ext_authz")
    return [pattern["exact"] for pattern in ext_authz["allowed_headers"]["patterns"]]


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
def test_ext_authz_sends_only_the_headers_the_service_reads(out: Path, entry: str) -> None:
    allowed = _allowed_headers(out, entry)
    read_by_service = {"authorization", "x-request-id", "x-correlation-id", "x-causation-id",
                       "x-client-ip"}  # fmt: skip
    assert read_by_service | {"user-agent", "x-forwarded-for", "content-type"} == set(allowed)
    assert len(allowed) == len(set(allowed))


def test_ext_authz_also_sends_the_configured_policy_headers(tmp_path: Path) -> None:
    code = render.main(
        [
            "--config",
            str(EXAMPLE),
            "--out",
            str(tmp_path),
            "--set",
            "authz.policy_headers=[x-tenant]",
        ]
    )
    assert code == 0
    allowed = _allowed_headers(tmp_path, "plant")
    assert "x-tenant" in allowed
    assert "content-type" not in allowed  # the default policy headers were replaced
    assert {"authorization", "x-request-id", "user-agent"} <= set(allowed)


def test_set_overrides_ports(tmp_path: Path) -> None:
    code = render.main(
        ["--config", str(EXAMPLE), "--out", str(tmp_path), "--set", "entry_points.plant.port=18090"]
    )
    assert code == 0
    listener = _resources(tmp_path, "plant", "lds")[0]
    assert listener["address"]["socket_address"]["port_value"] == 18090
    code = render.main(
        ["--config", str(EXAMPLE), "--out", str(tmp_path), "--set",
         "entry_points.plant.internal.port=18190"]
    )  # fmt: skip
    assert code == 0
    cp_plant = next(c for c in _resources(tmp_path, "cp", "cds") if c["name"] == "gateway_plant")
    endpoint = cp_plant["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 18190


def test_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    render.render_all(EXAMPLE, tmp_path)
    rds = tmp_path / "envoy" / "plant" / "rds.yaml"
    inode = rds.stat().st_ino
    render.render_all(EXAMPLE, tmp_path)
    assert rds.stat().st_ino == inode
    render.render_all(EXAMPLE, tmp_path, overrides={"authz": {"timeout_ms": 300}})
    assert rds.stat().st_ino != inode  # replaced by rename, never written in place


def test_hops_reach_plant_by_its_host_name_in_compose(tmp_path: Path) -> None:
    overrides = {
        "entry_points": {
            "plant": {"address": "0.0.0.0", "host": "plant", "internal": {"address": "0.0.0.0"}}
        }
    }
    render.render_all(EXAMPLE, tmp_path, overrides=overrides)
    cluster = next(c for c in _resources(tmp_path, "pp", "cds") if c["name"] == "gateway_plant")
    assert cluster["type"] == "STRICT_DNS"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "plant", "port_value": 8190}


def test_runtime_config_lists_the_headers_envoy_sends(tmp_path: Path) -> None:
    overrides = {"authz": {"policy_headers": ["x-tenant"]}}
    render.render_all(EXAMPLE, tmp_path, overrides=overrides)
    runtime = load_runtime_config(tmp_path / "authz" / "runtime.json")
    for entry in ("plant", "cp", "pp"):
        assert list(runtime.sent_headers or ()) == _allowed_headers(tmp_path, entry)
    assert runtime.unsent_headers(("x-tenant", "X-Request-Id")) == []
    assert runtime.unsent_headers(("content-type",)) == ["content-type"]
