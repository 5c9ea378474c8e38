"""deploy/terraform agrees with render's cloudrun target and the gateway config (no provider
can be downloaded here, so `terraform validate` cannot run; these facts are checked instead)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"
APP = (TERRAFORM / "app" / "main.tf").read_text()
SERVICE = (TERRAFORM / "modules" / "gateway_service" / "main.tf").read_text()
TARGETS = yaml.safe_load((REPO / "config" / "targets.yaml").read_text())
GATEWAY = yaml.safe_load((REPO / "config" / "gateway.yaml").read_text())


def test_entry_ports_are_the_gateway_configs_listeners() -> None:
    entries = re.search(r"entries = \{([^}]*)\}", APP)
    assert entries is not None
    ports = {name: int(port) for name, port in re.findall(r"(\w+) = (\d+)", entries.group(1))}
    assert ports == {name: entry["port"] for name, entry in GATEWAY["entry_points"].items()}


def test_service_names_are_the_hosts_render_sends_hops_to() -> None:
    # terraform: "${var.service_prefix}-${each.key}" and "${var.service_prefix}-backend";
    # render: ${service_prefix}-plant-<project number>.<region>.run.app
    assert 'name                  = "${var.service_prefix}-${each.key}"' in APP
    assert 'name                = "${var.service_prefix}-backend"' in APP
    overrides = TARGETS["cloudrun"]["overrides"]
    assert overrides["entry_points"]["plant"]["host"].startswith("${service_prefix}-plant-")
    assert overrides["upstreams"]["backend"]["host"].startswith("${service_prefix}-backend-")
    region_default = re.search(
        r'variable "region" \{[^}]*default\s*=\s*"([^"]+)"',
        (TERRAFORM / "app" / "variables.tf").read_text(),
    )
    assert region_default is not None
    assert region_default.group(1) == TARGETS["cloudrun"]["variables"]["region"] == "asia-south1"


def test_authz_sidecar_listens_where_the_cloudrun_render_points_envoy() -> None:
    authz = TARGETS["cloudrun"]["overrides"]["authz"]
    assert f'AUTHZ_GRPC_ADDRESS    = "{authz["host"]}:{authz["port"]}"' in SERVICE
    assert f"port = {authz['port']}" in SERVICE  # the gRPC startup and liveness probes
    assert 'depends_on = ["authz"]' in SERVICE  # Envoy starts once authz is SERVING


def test_backend_is_invoked_by_plant_only() -> None:
    binding = re.search(
        r'resource "google_cloud_run_v2_service_iam_member" "backend_invoker" \{(.*?)\n\}',
        APP,
        re.S,
    )
    assert binding is not None
    assert 'google_service_account.this["plant"]' in binding.group(1)
    assert 'ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"' in APP
