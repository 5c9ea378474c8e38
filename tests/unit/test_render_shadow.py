"""Shadow mode per stage: the gateway config's modes reach runtime.json and every route's check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from gateway_config import ConfigError
from gateway_contract.route_facts import CTX_SHADOW
from gateway_contract.runtime import RuntimeConfig, load_runtime_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
ENTRIES = ("plant", "cp", "pp")
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


def _example() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return config


def _route(config: dict[str, Any], route_id: str) -> dict[str, Any]:
    route: dict[str, Any] = next(r for r in config["routes"] if r["id"] == route_id)
    return route


def _render(tmp_path: Path, config: dict[str, Any]) -> tuple[Path, RuntimeConfig]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    out = tmp_path / "build"
    render.render_all(path, out)
    return out, load_runtime_config(out / "authz" / "runtime.json")


def _ext_authz(out: Path, entry: str, route_id: str) -> dict[str, Any]:
    document = yaml.safe_load((out / "envoy" / entry / "rds.yaml").read_text(encoding="utf-8"))
    routes = document["resources"][0]["virtual_hosts"][0]["routes"]
    route = next(r for r in routes if r["name"] == route_id)
    per_route: dict[str, Any] = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    return per_route


def _shadow_extension(out: Path, entry: str, route_id: str) -> str:
    extensions = _ext_authz(out, entry, route_id)["check_settings"]["context_extensions"]
    value: str = extensions[CTX_SHADOW]
    return value


@pytest.fixture
def shadowed(tmp_path: Path) -> tuple[Path, RuntimeConfig]:
    config = _example()
    config["shadow"] = {"policy": "shadow", "budget": "enforce"}
    # a route override replaces the global mode of the stages it names, and only those
    _route(config, "orders-create")["shadow"] = {"policy": "enforce", "authenticate": "shadow"}
    _route(config, "reports")["shadow"] = {"budget": "shadow"}
    _route(config, "profile")["shadow"] = {}
    return _render(tmp_path, config)


def test_global_shadow_applies_to_routes_without_an_override(
    shadowed: tuple[Path, RuntimeConfig],
) -> None:
    out, runtime = shadowed
    assert runtime.shadow == ("policy",)
    assert runtime.routes["orders-list"].shadow is None
    assert runtime.shadow_stages("orders-list") == ("policy",)
    for entry in ENTRIES:
        assert _shadow_extension(out, entry, "orders-list") == "policy"


def test_route_override_merges_over_the_global_modes(
    shadowed: tuple[Path, RuntimeConfig],
) -> None:
    out, runtime = shadowed
    expected = {
        "orders-create": ("authenticate",),
        "reports": ("policy", "budget"),  # stage order, whatever the config's order
        "profile": ("policy",),  # an empty override inherits everything
    }
    for route_id, stages in expected.items():
        assert runtime.routes[route_id].shadow == stages
        assert runtime.shadow_stages(route_id) == stages
        for entry in ENTRIES:
            assert _shadow_extension(out, entry, route_id) == ",".join(stages), (entry, route_id)


def test_public_routes_carry_no_check_and_no_shadow(
    shadowed: tuple[Path, RuntimeConfig],
) -> None:
    out, runtime = shadowed
    assert runtime.routes["health"].shadow is None
    for entry in ENTRIES:
        assert _ext_authz(out, entry, "health") == {"@type": PER_ROUTE_TYPE, "disabled": True}


def test_every_stage_enforces_by_default(tmp_path: Path) -> None:
    out, runtime = _render(tmp_path, _example())
    assert runtime.shadow == ()
    assert all(rule.shadow is None for rule in runtime.routes.values())
    for entry in ENTRIES:
        assert _shadow_extension(out, entry, "orders-list") == ""


def test_enforce_override_clears_a_global_shadow(tmp_path: Path) -> None:
    config = _example()
    config["shadow"] = {stage: "shadow" for stage in ("authenticate", "authorize", "policy")}
    _route(config, "admin")["shadow"] = {
        "authenticate": "enforce",
        "authorize": "enforce",
        "policy": "enforce",
    }
    out, runtime = _render(tmp_path, config)
    assert runtime.shadow == ("authenticate", "authorize", "policy")
    assert runtime.routes["admin"].shadow == ()
    assert runtime.shadow_stages("admin") == ()
    assert _shadow_extension(out, "plant", "admin") == ""
    assert _shadow_extension(out, "plant", "orders-list") == "authenticate,authorize,policy"


def test_shadow_setting_changes_the_revision(tmp_path: Path) -> None:
    enforced = render.render_all(EXAMPLE, tmp_path / "a").revision
    shadowed = render.render_all(
        EXAMPLE, tmp_path / "b", overrides={"shadow": {"budget": "shadow"}}
    ).revision
    assert enforced != shadowed


@pytest.mark.parametrize(
    ("shadow", "key_path", "reason"),
    [
        ({"polcy": "shadow"}, "shadow.polcy", "unknown stage"),
        ({"decide": "shadow"}, "shadow.decide", "unknown stage"),
        ({"budget": "off"}, "shadow.budget", "Input should be 'enforce' or 'shadow'"),
        (["policy"], "shadow", "Input should be a valid dictionary"),
    ],
)
def test_bad_global_shadow_names_the_key(
    tmp_path: Path, shadow: Any, key_path: str, reason: str
) -> None:
    config = _example()
    config["shadow"] = shadow
    with pytest.raises(ConfigError) as caught:
        _render(tmp_path, config)
    assert caught.value.key_path == key_path
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert not (tmp_path / "build").exists()


def test_bad_route_shadow_names_the_route(tmp_path: Path) -> None:
    config = _example()
    _route(config, "reports")["shadow"] = {"budget": "shadw"}
    with pytest.raises(ConfigError) as caught:
        _render(tmp_path, config)
    assert caught.value.key_path == "routes[4].shadow.budget"
    assert caught.value.reason.startswith("route 'reports': Input should be")
