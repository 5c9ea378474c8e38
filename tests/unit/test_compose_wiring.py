"""compose/docker-compose.yml is wired to the audit design and to render's compose target.

The compose smoke (compose/ci-smoke.sh) proves it runs; these check, without an engine, that
every part reads what another writes: the journal volume of authz and the shipper, the access
logs and admin sockets of the Envoys and the shipper, render's flags and manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from authz_service.settings import RETIRED_SETTINGS, Settings
from authz_service.shipper.settings import ShipperSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (REPO / "compose" / "Dockerfile").read_text()
ENVOYS = {"envoy-plant": "plant", "envoy-cp": "cp", "envoy-pp": "pp"}
APP_UID = "10001"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the render service writes, rendered here with its own arguments."""
    out = tmp_path_factory.mktemp("compose-render")
    args = [a for a in SERVICES["render"]["command"][2:] if not a.startswith("--out=")]
    assert render.main([*args, f"--out={out}"]) == 0
    return out


def _mounts(service: str) -> dict[str, str]:
    """volume name -> path in the container (read-only marks dropped)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        name, path = volume.split(":")[:2]
        mounts[name] = path
    return mounts


def _env(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service].get("environment", {}).items()}


def _render_out() -> str:
    (out,) = [a.split("=", 1)[1] for a in SERVICES["render"]["command"] if a.startswith("--out=")]
    return str(out)


def test_render_uses_the_compose_target() -> None:
    assert "--target=compose" in SERVICES["render"]["command"]
    assert _mounts("render")["gateway-config"] == _render_out()


def test_authz_and_the_shipper_share_the_journal() -> None:
    journal = _env("authz")["AUTHZ_AUDIT_JOURNAL_DIR"]
    assert _env("shipper")["AUTHZ_SHIPPER_JOURNAL_DIR"] == journal
    assert _mounts("authz")["audit-journal"] == _mounts("shipper")["audit-journal"] == journal
    assert re.search(rf"chown {APP_UID}:{APP_UID} [^\n]*{journal}", DOCKERFILE)


def test_the_shipper_tails_what_each_envoy_writes(rendered: Path) -> None:
    manifest_path = _env("shipper")["AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST"]
    assert manifest_path == f"{_render_out()}/{render.ACCESS_LOG_MANIFEST}"
    logs = {e["name"]: e for e in json.loads((rendered / render.ACCESS_LOG_MANIFEST).read_text())[
        "access_logs"]}  # fmt: skip
    for service, entry in ENVOYS.items():
        log_dir = str(Path(logs[entry]["path"]).parent)
        assert _mounts(service)["access-logs"] == log_dir
        assert _mounts("shipper")["access-logs"] == log_dir
        # its admin is a socket in that volume: the shipper's /reopen_logs reaches it there
        assert logs[entry]["admin"] == f"unix:{log_dir}/{entry}-admin.sock"
    # render mounts it first, so a new volume takes the image's owner and mode
    assert _mounts("render")["access-logs"] == log_dir
    assert re.search(rf"chmod 2770 {log_dir}", DOCKERFILE)


@pytest.mark.parametrize(("service", "entry"), ENVOYS.items())
def test_each_envoy_runs_its_bootstrap_with_renders_flags(service: str, entry: str) -> None:
    command = " ".join(SERVICES[service]["command"])
    config = _render_out()
    assert f"< {config}/envoy/flags" in command  # the access-log flush interval
    assert f"-c {config}/envoy/{entry}.yaml" in command
    assert '"$${flags[@]}"' in command  # compose's escape of bash's "${flags[@]}"
    # Envoy's uid, the app's group: the access-log directory is 2770, 10001:10001
    assert SERVICES[service]["user"] == f"101:{APP_UID}"


def test_renders_flags_set_the_flush_interval(rendered: Path) -> None:
    flags = (rendered / "envoy" / "flags").read_text().split()
    assert flags == ["--file-flush-interval-msec", "250"]


def test_only_the_shipper_and_migrations_log_in_and_never_with_a_retired_setting() -> None:
    authz = _env("authz")
    assert not set(authz) & set(RETIRED_SETTINGS), "the in-process writer's settings are gone"
    assert not [key for key in authz if "DATABASE" in key]
    assert set(authz) - {"GATEWAY_DEV_JWT_SECRET"} <= {
        f"AUTHZ_{name.upper()}" for name in Settings.model_fields
    }
    shipper_settings = {f"AUTHZ_SHIPPER_{name.upper()}" for name in ShipperSettings.model_fields}
    assert set(_env("shipper")) <= shipper_settings
    assert "AUTHZ_SHIPPER_DATABASE_URL" in _env("shipper")
    assert "AUTHZ_SHIPPER_RETENTION_DATABASE_URL" in _env("shipper")


def test_the_shipper_is_healthy_only_when_its_health_endpoint_says_so() -> None:
    address = _env("shipper")["AUTHZ_SHIPPER_HEALTH_ADDRESS"]
    check = " ".join(SERVICES["shipper"]["healthcheck"]["test"])
    assert f"http://{address}/health" in check
    assert SERVICES["shipper"]["hostname"], "offsets are kept per host: a fixed one"


def test_provisioning_and_migrations_run_before_anything_logs_in() -> None:
    assert SERVICES["migrate"]["depends_on"]["provision"]["condition"] == (
        "service_completed_successfully"
    )
    for service in ("shipper", "backend"):
        assert SERVICES[service]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
