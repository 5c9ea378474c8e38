"""`make up` ports: every listener of the stack has a name, and --free-ports moves every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_service.settings import Settings
from authz_service.shipper.settings import ShipperSettings
from devstack.stackconfig import choose_ports, load_with_ports
from gateway_config import load_gateway_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
# What the stack binds besides the datastores (which always take free ports): each entry
# point's public, admin and internal listeners, the backend, the authz gRPC, metrics and admin,
# and the audit shipper's /health and /metrics.
NAMES = {"plant", "cp", "pp", "plant-admin", "cp-admin", "pp-admin", "plant-internal",
         "backend", "authz", "metrics", "admin", "shipper"}  # fmt: skip


def _well_known() -> set[int]:
    config = load_gateway_config(EXAMPLE)
    ports = {config.authz.port, config.upstreams["backend"].port}
    for entry in config.entry_points.values():
        ports |= {entry.port, entry.admin.port}
        if entry.internal is not None:
            ports.add(entry.internal.port)
    for address in (Settings.model_fields[n].default for n in ("metrics_address", "admin_address")):
        ports.add(int(address.rsplit(":", 1)[1]))
    shipper = ShipperSettings.model_fields["health_address"].default
    ports.add(int(shipper.rsplit(":", 1)[1]))
    return ports


def test_the_defaults_name_every_listener_of_the_stack() -> None:
    ports = choose_ports(load_gateway_config(EXAMPLE), {}, free=False)
    assert set(ports.by_name) == NAMES
    assert set(ports.by_name.values()) == _well_known()


def test_free_ports_move_every_port_to_distinct_ones() -> None:
    ports = choose_ports(load_gateway_config(EXAMPLE), {}, free=True)
    assert set(ports.by_name) == NAMES
    assert not set(ports.by_name.values()) & _well_known()
    assert len(set(ports.by_name.values())) == len(NAMES)


def test_requested_ports_win_and_the_config_follows_every_port() -> None:
    requested = {"plant": 18090, "plant-internal": 18190, "admin": 19002}
    ports = choose_ports(load_gateway_config(EXAMPLE), requested, free=True)
    assert {name: ports[name] for name in requested} == requested
    config, _ = load_with_ports(EXAMPLE, ports)
    plant = config.entry_points["plant"]
    assert (plant.port, plant.admin.port) == (18090, ports["plant-admin"])
    assert plant.internal is not None
    assert plant.internal.port == 18190
    assert config.authz.port == ports["authz"]


def test_an_unknown_port_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="plant-internal"):
        choose_ports(load_gateway_config(EXAMPLE), {"plnt": 1}, free=False)
