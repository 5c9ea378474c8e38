"""Ports and rendering for `make up`: the gateway config with port overrides, rendered to build/."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from authz_service.settings import Settings
from authz_service.shipper.settings import ShipperSettings
from devstack.free_ports import LOOPBACK, free_port
from gateway_config import GatewayConfig, load_gateway_config

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKEND_UPSTREAM = "backend"  # the upstream the reference backend stands for


def _settings_port(name: str, settings: type[BaseSettings] = Settings) -> int:
    """The port of an *_ADDRESS default (host:port), so there is one place for it."""
    default: str = settings.model_fields[name].default
    return int(default.rsplit(":", 1)[1])


# the authz service's own listeners besides gRPC: Prometheus and the GatewayAdmin API
METRICS_PORT = _settings_port("metrics_address")
ADMIN_PORT = _settings_port("admin_address")
SHIPPER_PORT = _settings_port("health_address", ShipperSettings)  # the shipper's /health, /metrics
ACCESS_LOG_DIR = "access-logs"  # under VAR_DIR: Envoy's audit access logs


@dataclass(frozen=True)
class Ports:
    """Every port `make up` listens on, by name: each entry point's public, admin and internal
    listener, the backend, and the authz service's gRPC, metrics and admin ports.

    PostgreSQL, Redis and OPA always take free ports of their own (devstack.local).
    """

    by_name: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.by_name[name]

    def overrides(self, config: GatewayConfig) -> dict[str, Any]:
        """The gateway-config overrides that move the config's ports to these."""
        entry_points: dict[str, Any] = {
            name: {"port": self[name], "admin": {"port": self[f"{name}-admin"]}}
            for name in config.entry_points
        }
        for name, entry in config.entry_points.items():
            if entry.internal is not None:
                entry_points[name]["internal"] = {"port": self[f"{name}-internal"]}
        result: dict[str, Any] = {
            "entry_points": entry_points,
            "authz": {"port": self["authz"]},
        }
        if BACKEND_UPSTREAM in config.upstreams:
            result["upstreams"] = {BACKEND_UPSTREAM: {"port": self["backend"]}}
        return result


def choose_ports(config: GatewayConfig, requested: dict[str, int], *, free: bool) -> Ports:
    """The config's ports, with `requested` ones replaced; `free`: any other port is a free one."""
    defaults: dict[str, int] = {
        "authz": config.authz.port, "metrics": METRICS_PORT, "admin": ADMIN_PORT,
        "shipper": SHIPPER_PORT,
    }  # fmt: skip
    backend = config.upstreams.get(BACKEND_UPSTREAM)
    defaults["backend"] = backend.port if backend is not None else 8091
    for name, entry in config.entry_points.items():
        defaults[name] = entry.port
        defaults[f"{name}-admin"] = entry.admin.port
        if entry.internal is not None:
            defaults[f"{name}-internal"] = entry.internal.port
    unknown = set(requested) - set(defaults)
    if unknown:
        raise ValueError(f"unknown port name(s) {sorted(unknown)}; known: {sorted(defaults)}")
    chosen: dict[str, int] = {}
    for name, port in defaults.items():
        wanted = requested.get(name, port)
        # free ports never repeat one another nor a requested one
        while name not in requested and free and (wanted in chosen.values() or wanted == port):
            wanted = free_port()
        chosen[name] = wanted
    return Ports(chosen)


def http_status(url: str, timeout: float = 1.0) -> int:
    """Status of GET `url` (a loopback URL of the stack); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


def busy_ports(ports: Ports) -> list[str]:
    """`name=port` for each port something already listens on (another `make up`?)."""
    busy = []
    for name, port in sorted(ports.by_name.items()):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                busy.append(f"{name}={port}")
    return busy


def load_with_ports(config_path: Path, ports: Ports) -> tuple[GatewayConfig, dict[str, Any]]:
    """The config as `make up` runs it, and the overrides that moved its ports."""
    overrides = ports.overrides(load_gateway_config(config_path))
    return load_gateway_config(config_path, overrides), overrides


def render(config_path: Path, overrides: dict[str, Any], build_dir: Path) -> str:
    """Render with render.py's API into build_dir/{envoy,authz}; returns the config revision."""
    if str(REPO_ROOT) not in sys.path:  # render.py is a top-level script of the repo
        sys.path.insert(0, str(REPO_ROOT))
    import render as renderer  # noqa: PLC0415

    return renderer.render_all(config_path, build_dir, overrides).revision
