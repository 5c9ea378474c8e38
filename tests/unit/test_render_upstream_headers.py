"""What the rendered routes and Lua filters let through to the upstream (hostile pass 2026-11-30).

tests/e2e/test_backend_headers.py sends the same through the real Envoys; here, the settings
that turn the defaults off (`forward_authorization`, `preserve_host`) and the hop routes,
which must keep the token for the next listener's check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from gateway_contract.headers import CLIENT_CLAIM_HEADERS

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
LISTENERS = [("plant", "plant"), ("plant", "plant_internal"), ("cp", "cp"), ("pp", "pp")]


def _render(tmp_path: Path, backend: dict[str, Any] | None = None) -> Path:
    overrides = {"upstreams": {"backend": backend}} if backend else {}
    render.render_all(EXAMPLE, tmp_path, overrides=overrides)
    return tmp_path


def _routes(out: Path, entry: str) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((out / "envoy" / entry / "rds.yaml").read_text())
    routes = document["resources"][0]["virtual_hosts"][0]["routes"]
    return {route["name"]: route for route in routes if "route" in route}


def _lua(out: Path, entry: str, listener: str) -> str:
    document = yaml.safe_load((out / "envoy" / entry / "lds.yaml").read_text())
    by_name = {resource["name"]: resource for resource in document["resources"]}
    manager = by_name[listener]["filter_chains"][0]["filters"][0]["typed_config"]
    lua = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.lua")
    code: str = lua["typed_config"]["default_source_code"]["inline_string"]
    return code


@pytest.mark.parametrize(("entry", "listener"), LISTENERS)
def test_every_listener_drops_the_clients_claims_and_vouches_for_forwarded_for(
    tmp_path: Path, entry: str, listener: str
) -> None:
    lua = _lua(_render(tmp_path), entry, listener)
    strip_line = next(line for line in lua.splitlines() if line.startswith("local STRIP"))
    for header in CLIENT_CLAIM_HEADERS:
        assert f'"{header}"' in strip_line
    assert 'headers:replace("x-forwarded-for", client)' in lua


def test_routes_to_the_upstream_drop_the_token_and_send_its_own_host(tmp_path: Path) -> None:
    out = _render(tmp_path)
    for name, route in _routes(out, "plant").items():
        assert route["request_headers_to_remove"] == ["authorization"], name
        assert route["route"]["host_rewrite_literal"] == "127.0.0.1:8091", name


@pytest.mark.parametrize("entry", ["cp", "pp"])
def test_hops_keep_the_token_for_the_next_check(tmp_path: Path, entry: str) -> None:
    for name, route in _routes(_render(tmp_path), entry).items():
        assert "request_headers_to_remove" not in route, name
        assert "host_rewrite_literal" not in route["route"], name


def test_an_upstream_can_be_given_the_token_and_the_clients_host(tmp_path: Path) -> None:
    out = _render(tmp_path, {"forward_authorization": True, "preserve_host": True})
    for name, route in _routes(out, "plant").items():
        assert "request_headers_to_remove" not in route, name
        assert "host_rewrite_literal" not in route["route"], name


def test_a_tls_upstream_gets_its_name_as_host(tmp_path: Path) -> None:
    backend = {"host": "backend.example", "port": 443, "tls": True, "preserve_host": True}
    for route in _routes(_render(tmp_path, backend), "plant").values():
        assert route["route"]["host_rewrite_literal"] == "backend.example"
