"""Cross-checks on render: routes nobody could pass are refused with the route and key named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import render
from gateway_config import ConfigError, load_gateway_config

HERE = Path(__file__).parent
BAD = HERE / "fixtures" / "bad_configs"
EXAMPLE = HERE.parents[1] / "config" / "gateway.yaml"
AUTHZ_REGO = "# the gateway policy\npackage gateway.authz\n\ndefault allow := false\n"


@pytest.mark.parametrize(
    ("fixture", "key_path", "route_id", "reason"),
    [
        ("route_without_permission", "routes[1]", "orders", "a non-public route needs"),
        (
            "route_permission_granted_to_no_role",
            "routes[1].permission",
            "orders",
            "permission 'orders:write' is granted to no role",
        ),
        (
            "unknown_policy_package",
            "routes[1].policy",
            "orders",
            "no Rego package 'gateway.billing' in",
        ),
        (
            "budget_metric_without_plan",
            "routes[1].budget.metric",
            "orders",
            "no budget plan limits 'exports'",
        ),
        (
            "entry_point_can_never_authorize",
            "routes[1].entry_points[1]",
            "orders",
            "no CP role holds 'orders:write', so entry point 'cp' can never authorize",
        ),
    ],
)
def test_each_crosscheck_names_file_route_and_key(
    fixture: str, key_path: str, route_id: str, reason: str
) -> None:
    path = BAD / f"{fixture}.yaml"
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert caught.value.file == str(path)
    assert caught.value.key_path == key_path
    assert caught.value.reason.startswith(f"route {route_id!r}: {reason}"), caught.value.reason


def test_unused_permission_granted_to_no_role_names_the_permission() -> None:
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(BAD / "permission_granted_to_no_role.yaml")
    assert caught.value.key_path == "permissions[1]"
    assert caught.value.reason == "permission 'reports:read' is granted to no role"


def test_example_config_passes_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the default policy dir is the repo's policies/, not ./policies
    monkeypatch.chdir(tmp_path)
    assert render.main(["--config", str(EXAMPLE), "--out", str(tmp_path / "out")]) == 0


def test_policy_must_be_a_package_of_the_policy_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    (policies / "gateway").mkdir(parents=True)
    (policies / "gateway" / "billing.rego").write_text("package gateway.billing\n")
    # a test file's package does not count, even when it is named like the policy
    (policies / "gateway" / "authz_test.rego").write_text("package gateway.authz\n")
    argv = ["--config", str(EXAMPLE), "--out", str(tmp_path / "out"), "--policy-dir", str(policies)]
    assert render.main(argv) == 2
    assert capsys.readouterr().err == (
        f"{EXAMPLE}: routes[3].policy: route 'orders-create': no Rego package 'gateway.authz' "
        f"in {policies} (defined: gateway.billing)\n"
    )
    assert not (tmp_path / "out").exists()
    (policies / "gateway" / "authz.rego").write_text(AUTHZ_REGO)
    assert render.main(argv) == 0


def test_missing_policy_dir_is_reported_on_the_first_route_with_a_policy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        render.render_all(EXAMPLE, tmp_path / "out", policy_dir=tmp_path / "nowhere")
    assert caught.value.key_path == "routes[3].policy"
    assert caught.value.reason.endswith(f"in {tmp_path / 'nowhere'} (defined: none)")


def test_entry_point_whose_roles_lost_a_permission_can_never_authorize(tmp_path: Path) -> None:
    # CP's roles no longer grant orders:write, but orders-create is still exposed on cp
    read_only = ["orders:read", "reports:read", "profile:read"]
    overrides = {"rbac": {"CP": {"customer_admin": read_only, "customer": read_only}}}
    with pytest.raises(ConfigError) as caught:
        render.render_all(EXAMPLE, tmp_path / "out", overrides=overrides)
    assert caught.value.key_path == "routes[3].entry_points[1]"
    assert caught.value.reason == (
        "route 'orders-create': no CP role holds 'orders:write', "
        "so entry point 'cp' can never authorize the route"
    )


def test_a_wildcard_role_holds_every_permission(tmp_path: Path) -> None:
    read_only = ["orders:read"]
    overrides = {
        "rbac": {
            "CP": {"customer_admin": read_only, "customer": read_only, "viewer": ["*"]},
            "PLANT": {"admin": read_only, "support": ["*"]},
        }
    }
    # only the wildcard roles hold orders:write on CP: the config renders, wildcards kept
    render.render_all(EXAMPLE, tmp_path / "out", overrides=overrides)
    runtime = json.loads((tmp_path / "out" / "authz" / "runtime.json").read_text())
    assert runtime["rbac"]["CP"]["viewer"] == ["*"]
    assert runtime["rbac"]["PLANT"]["support"] == ["*"]
    # the same roles without the wildcard: no CP role holds orders:write any more
    overrides["rbac"]["CP"]["viewer"] = read_only
    with pytest.raises(ConfigError) as caught:
        render.render_all(EXAMPLE, tmp_path / "refused", overrides=overrides)
    assert caught.value.reason == (
        "route 'orders-create': no CP role holds 'orders:write', "
        "so entry point 'cp' can never authorize the route"
    )
