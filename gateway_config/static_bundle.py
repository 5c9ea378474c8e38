"""Fold an entry point's bootstrap and its lds/cds/rds files into one static Envoy config.

`envoy --mode validate` does not load filesystem-subscribed resources, so render.py
validates this equivalent static form to check every listener, cluster and route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HCM = "envoy.filters.network.http_connection_manager"
FILE_ACCESS_LOG = "envoy.access_loggers.file"


def _resources(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    resources: list[dict[str, Any]] = document.get("resources") or []
    return [{k: v for k, v in item.items() if k != "@type"} for item in resources]


def static_bootstrap(bootstrap_path: Path) -> dict[str, Any]:
    """The bootstrap with its dynamic resources inlined as static_resources."""
    bootstrap: dict[str, Any] = yaml.safe_load(bootstrap_path.read_text(encoding="utf-8"))
    dynamic = bootstrap.pop("dynamic_resources")
    listeners = _resources(Path(dynamic["lds_config"]["path_config_source"]["path"]))
    clusters = _resources(Path(dynamic["cds_config"]["path_config_source"]["path"]))
    for listener in listeners:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                config = network_filter["typed_config"]
                if network_filter["name"] != HCM or "rds" not in config:
                    continue
                rds = config.pop("rds")
                routes = _resources(Path(rds["config_source"]["path_config_source"]["path"]))
                config["route_config"] = routes[0]
    bootstrap["static_resources"] = {"listeners": listeners, "clusters": clusters}
    return bootstrap


def without_log_files(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The static form with every file access log writing to /dev/null.

    Validation opens the access-log files; a target's paths (/srv/access-logs, ...) exist in
    its containers, not on the machine that validates.
    """
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                for log in network_filter["typed_config"].get("access_log", []):
                    if log["name"] == FILE_ACCESS_LOG:
                        log["typed_config"]["path"] = "/dev/null"
    return bootstrap
