"""deploy/terraform agrees with render's cloudrun target and the gateway config (no provider
can be downloaded here, so `terraform validate` cannot run; these facts are checked instead)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from authz_service.settings import Settings
from authz_service.shipper.settings import ShipperSettings
from devstack.provision import Logins, password_variable

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "deploy" / "terraform"
APP = (TERRAFORM / "app" / "main.tf").read_text()
DATA = (TERRAFORM / "app" / "data" / "main.tf").read_text()
DATABASE = (TERRAFORM / "modules" / "database" / "main.tf").read_text()
SERVICE = (TERRAFORM / "modules" / "gateway_service" / "main.tf").read_text()
APP_IMAGE = (REPO / "deploy" / "images" / "app.Dockerfile").read_text()
TARGETS = yaml.safe_load((REPO / "config" / "targets.yaml").read_text())
GATEWAY = yaml.safe_load((REPO / "config" / "gateway.yaml").read_text())


def _block(text: str, header: str) -> str:
    """The body of `header {` up to its closing brace at the start of a line."""
    found = re.search(re.escape(header) + r" \{(.*?)\n\}", text, re.S)
    assert found is not None, header
    return found.group(1)


def test_entry_ports_are_the_gateway_configs_listeners() -> None:
    entries = re.search(r"entries = \{ for entry, port in \{([^}]*)\}", APP)
    assert entries is not None
    ports = {name: int(port) for name, port in re.findall(r"(\w+) = (\d+)", entries.group(1))}
    assert ports == {name: entry["port"] for name, entry in GATEWAY["entry_points"].items()}
    internal = GATEWAY["entry_points"]["plant"]["internal"]["port"]
    assert f"plant_internal_port = {internal}" in APP


def test_service_names_are_the_hosts_render_sends_hops_to() -> None:
    # terraform: "${var.service_prefix}-${each.key}" and "${var.service_prefix}-backend";
    # render: ${service_prefix}-plant-<project number>.<region>.run.app
    assert 'name                  = "${var.service_prefix}-${each.key}"' in APP
    assert 'name                = "${var.service_prefix}-backend"' in APP
    overrides = TARGETS["cloudrun"]["overrides"]
    # the hops go to PLANT's internal listener, a service of its own
    assert 'name                  = "${var.service_prefix}-plant-internal"' in APP
    plant = overrides["entry_points"]["plant"]
    assert plant["host"].startswith("${service_prefix}-plant-internal-")
    assert plant["hop_id_token_audience"] == f"https://{plant['host']}"
    assert overrides["upstreams"]["backend"]["host"].startswith("${service_prefix}-backend-")
    region_default = re.search(
        r'variable "region" \{[^}]*default\s*=\s*"([^"]+)"',
        (TERRAFORM / "app" / "variables.tf").read_text(),
    )
    assert region_default is not None
    assert region_default.group(1) == TARGETS["cloudrun"]["variables"]["region"] == "asia-south1"


def test_authz_sidecar_listens_where_the_cloudrun_render_points_envoy() -> None:
    authz = TARGETS["cloudrun"]["overrides"]["authz"]
    assert _map(SERVICE, "authz_env")["AUTHZ_GRPC_ADDRESS"] == f"{authz['host']}:{authz['port']}"
    assert f"port = {authz['port']}" in SERVICE  # the gRPC startup and liveness probes
    assert 'depends_on = ["authz"]' in SERVICE  # Envoy starts once authz is SERVING


def test_backend_is_invoked_by_plant_only() -> None:
    binding = re.search(
        r'resource "google_cloud_run_v2_service_iam_member" "backend_invoker" \{(.*?)\n\}',
        APP,
        re.S,
    )
    assert binding is not None
    assert 'for_each = toset(["plant", "plant-internal"])' in binding.group(1)
    assert 'ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"' in APP


def test_plants_internal_service_is_internal_and_invoked_by_cp_and_pp_only() -> None:
    internal = _block(APP, 'module "plant_internal"')
    assert 'entry                 = "plant"' in internal  # the PLANT images, its bootstrap
    assert "port                  = local.plant_internal_port" in internal
    assert 'ingress               = "INGRESS_TRAFFIC_INTERNAL_ONLY"' in internal
    assert "invokers              = local.hop_invokers" in internal
    assert 'hop_invokers = [for hop in ["cp", "pp"] :' in APP
    assert 'google_service_account.this["plant-internal"]' in internal
    # the public services: clients through the load balancer; no hop identity is needed there
    assert 'invokers              = ["allUsers"]' in _block(APP, 'module "gateway"')


def _map(text: str, name: str) -> dict[str, str]:
    """`name = { KEY = "value" ... }` or `name = merge({...` of a locals block: its keys."""
    body = re.search(rf"{name} = (?:merge\(\s*)?\{{(.*?)\n\s*\}}", text, re.S)
    assert body is not None, name
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"?([^"\n#]*?)"?\s*(?:#.*)?$', body.group(1), re.M))


def test_the_shipper_reads_what_envoy_and_authz_write() -> None:
    journal = re.search(r'journal_dir\s+=\s+"([^"]+)"', SERVICE)
    log_dir = re.search(r'access_log_dir\s+=\s+"([^"]+)"', SERVICE)
    assert journal is not None
    assert log_dir is not None
    # Envoy writes where render's cloudrun target puts its access logs
    assert log_dir.group(1) == TARGETS["cloudrun"]["overrides"]["audit"]["access_log_dir"]
    authz, shipper = _map(SERVICE, "authz_env"), _map(SERVICE, "shipper_env")
    assert (
        authz["AUTHZ_AUDIT_JOURNAL_DIR"]
        == shipper["AUTHZ_SHIPPER_JOURNAL_DIR"]
        == ("local.journal_dir")
    )
    assert shipper["AUTHZ_SHIPPER_ACCESS_LOGS"] == "var.entry"  # this instance's Envoy only
    manifest = shipper["AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST"]
    assert f"COPY --from=build /out/audit/access_logs.json {manifest}" in APP_IMAGE
    # each volume is mounted by its writer and by the shipper, at the same place
    for volume, path in (("access-logs", "local.access_log_dir"),
                         ("audit-journal", "local.journal_dir")):  # fmt: skip
        mounts = re.findall(rf'name\s+= "{volume}"\n\s+mount_path = {path}', SERVICE)
        assert len(mounts) == 2, volume
    shipper_settings = {f"AUTHZ_SHIPPER_{n.upper()}" for n in ShipperSettings.model_fields}
    assert {k for k in shipper if k.startswith("AUTHZ_")} <= shipper_settings
    assert {k for k in authz if k.startswith("AUTHZ_")} <= {
        f"AUTHZ_{n.upper()}" for n in Settings.model_fields
    }
    assert not [key for key in authz if "DATABASE" in key], "authz has no database login"
    assert (
        '"AUTHZ_SHIPPER_DATABASE_URL"'
        in (TERRAFORM / "modules" / "gateway_service" / "variables.tf").read_text()
    )


@pytest.mark.parametrize(("duty", "login"), Logins().by_duty().items())
def test_the_database_logins_are_the_provisionings(duty: str, login: str) -> None:
    assert re.search(rf'^\s+{duty}\s+= "{login}"$', DATABASE, re.M), (duty, login)


def test_the_provision_job_sets_every_login_and_the_migrations_run_as_the_migrator() -> None:
    provision = _block(APP, 'module "provision"')
    assert 'command               = ["python3", "-m", "devstack", "provision"]' in provision
    assert '"--passwords-from-env"' in provision
    assert "PROVISION_SUPERUSER_DSN = module.data.provisioner_url_secret" in provision
    # <DUTY>_DB_PASSWORD for every duty of the password secrets: what passwords_from_env reads
    assert '"${upper(duty)}_DB_PASSWORD" => secret' in provision
    assert password_variable("migrator") == "MIGRATOR_DB_PASSWORD"
    migrations = _block(APP, 'module "migrations"')
    assert 'AUTHZ_DATABASE_URL = module.data.database_url_secrets["migrator"]' in migrations
    # each identity reads only its own secrets
    assert '{ (module.database.provisioner_url_secret) = ["provision"] }' in DATA
    assert '{ (local.urls["migrator"]) = ["migrate"] }' in DATA
    assert '{ (local.urls["shipper"]) = local.gateways }' in DATA
