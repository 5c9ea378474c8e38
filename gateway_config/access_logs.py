"""What render writes for the audit's access logs: the shipper's manifest and Envoy's flags."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from gateway_config.models import EntryPoint, GatewayConfig


def access_log_path(config: GatewayConfig, name: str) -> Path:
    """The entry point's access-log file, absolute (a relative dir is the current one's)."""
    # abspath, not resolve(): a target's path is one in its containers, whose symlinks the
    # rendering machine's (/var/run -> /run) say nothing about
    return Path(os.path.abspath(config.audit.access_log_dir)) / f"{name}.log"


def admin_endpoint(entry: EntryPoint) -> str:
    """How a local client reaches an Envoy's admin: `unix:<socket>` or `host:port`."""
    if entry.admin.pipe is not None:
        return f"unix:{entry.admin.pipe}"
    return f"{entry.admin.address}:{entry.admin.port}"


def envoy_flags(config: GatewayConfig) -> str:
    """The command-line flags every rendered Envoy needs, one token per line (`envoy/flags`).

    Envoy has no bootstrap field for the access-log flush interval, so whatever starts Envoy
    (devstack, compose, the Envoy image's entrypoint) passes these.
    """
    return f"--file-flush-interval-msec\n{config.audit.file_flush_interval_ms}\n"


def access_log_manifest(config: GatewayConfig) -> str:
    """What the audit shipper tails: each entry point's log file and its Envoy admin."""
    entries = [
        {
            "name": name,
            "gateway_type": str(entry.gateway_type),
            "path": str(access_log_path(config, name)),
            "admin": admin_endpoint(entry),
            "file_flush_interval_ms": config.audit.file_flush_interval_ms,
        }
        for name, entry in config.entry_points.items()
    ]
    return orjson.dumps({"access_logs": entries}, option=orjson.OPT_INDENT_2).decode() + "\n"
