"""The values the Envoy templates need, per entry point, computed from the gateway config."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import orjson

from authz_service.runtime_config import (
    CTX_BUDGET_COST,
    CTX_BUDGET_METRIC,
    CTX_CONFIG_REVISION,
    CTX_GATEWAY_TYPE,
    CTX_PAID_ONLY,
    CTX_PERMISSION,
    CTX_POLICY,
    CTX_ROUTE_ID,
    CTX_SHADOW,
    IDENTITY_HEADERS,
)
from gateway_config.models import EntryPoint, GatewayConfig, HealthCheck, Route

AUTHZ_CLUSTER = "authz"
CORRELATION_HEADER = "x-correlation-id"
CAUSATION_HEADER = "x-causation-id"
# the route rds.yaml.j2 renders for the entry point's readiness path: health-check traffic,
# left out of the audit access log
READINESS_ROUTE = "readiness"


def access_log_path(config: GatewayConfig, name: str) -> Path:
    """The entry point's access-log file, absolute (a relative dir is the current one's)."""
    return Path(config.audit.access_log_dir).resolve() / f"{name}.log"


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(
    name: str,
    host: str,
    port: int,
    connect_timeout_ms: int,
    *,
    http2: bool = False,
    health_check: HealthCheck | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "host": host,
        "port": port,
        "connect_timeout": _seconds(connect_timeout_ms),
        "http2": http2,
        "health_check": None
        if health_check is None
        else {
            "path": health_check.path,
            "interval": _seconds(health_check.interval_ms),
            "timeout": _seconds(health_check.timeout_ms),
            "unhealthy_threshold": health_check.unhealthy_threshold,
            "healthy_threshold": health_check.healthy_threshold,
        },
    }


def _envoy_match(route: Route) -> dict[str, Any]:
    match: dict[str, Any]
    if route.match.prefix is not None:
        prefix = route.match.prefix
        # path_separated_prefix: /api/v1/orders matches /api/v1/orders/7, not /api/v1/ordersx
        match = {"prefix": prefix} if prefix.endswith("/") else {"path_separated_prefix": prefix}
    elif route.match.path is not None:
        match = {"path": route.match.path}
    else:
        match = {"safe_regex": {"regex": route.match.regex}}
    if route.match.methods:
        methods = "|".join(route.match.methods)
        match["headers"] = [
            {"name": ":method", "string_match": {"safe_regex": {"regex": f"^({methods})$"}}}
        ]
    return match


def _context_extensions(
    config: GatewayConfig, entry: EntryPoint, route: Route, revision: str
) -> dict[str, str]:
    # The budget is charged once, by the hop that reaches the upstream (PLANT), not per hop.
    charges_budget = route.budget is not None and entry.via is None
    return {
        CTX_GATEWAY_TYPE: str(entry.gateway_type),
        CTX_ROUTE_ID: route.id,
        CTX_PERMISSION: route.permission or "",
        CTX_POLICY: route.policy or "",
        CTX_PAID_ONLY: "true" if route.paid_only else "false",
        CTX_BUDGET_METRIC: route.budget.metric if route.budget and charges_budget else "",
        CTX_BUDGET_COST: str(route.budget.units) if route.budget and charges_budget else "0",
        CTX_CONFIG_REVISION: revision,
        CTX_SHADOW: ",".join(config.shadow_stages(route)),
    }


def _gateway_cluster_name(entry_name: str) -> str:
    return f"gateway_{entry_name}"


def entry_point_view(
    config: GatewayConfig, name: str, revision: str, config_dir: Path
) -> dict[str, Any]:
    """Everything the bootstrap, lds, cds and rds templates need for one entry point."""
    entry = config.entry_points[name]
    routes = [route for route in config.routes if name in route.entry_points]
    clusters = [
        _cluster(
            AUTHZ_CLUSTER,
            config.authz.host,
            config.authz.port,
            config.authz.connect_timeout_ms,
            http2=True,
        )
    ]
    if entry.via is not None:
        target = config.entry_points[entry.via]
        host = target.host or (
            "127.0.0.1" if target.address in ("0.0.0.0", "::") else target.address
        )
        clusters.append(
            _cluster(
                _gateway_cluster_name(entry.via),
                host,
                target.port,
                1000,
                health_check=HealthCheck(path=target.readiness_path),
            )
        )
    else:
        for upstream_name in dict.fromkeys(route.upstream for route in routes):
            upstream = config.upstreams[upstream_name]
            clusters.append(
                _cluster(
                    upstream_name,
                    upstream.host,
                    upstream.port,
                    upstream.connect_timeout_ms,
                    health_check=upstream.health_check,
                )
            )
    # clients may send x-causation-id only to an entry point other hops forward to
    receives_hops = any(other.via == name for other in config.entry_points.values())
    strip = [h for h in IDENTITY_HEADERS if h != CORRELATION_HEADER]
    if not receives_hops:
        strip.append(CAUSATION_HEADER)
    return {
        "name": name,
        "gateway_type": str(entry.gateway_type),
        "address": entry.address,
        "port": entry.port,
        "admin": {"address": entry.admin.address, "port": entry.admin.port},
        "config_dir": str(config_dir),
        "readiness_path": entry.readiness_path,
        "sets_causation_id": entry.via is not None,
        "strip_headers": strip,
        "correlation_header": CORRELATION_HEADER,
        "causation_header": CAUSATION_HEADER,
        "access_log": {
            "path": str(access_log_path(config, name)),
            # readiness probes (other hops' health checks of this one) are not requests
            "filter": f"!(has(xds.route_name) && xds.route_name == '{READINESS_ROUTE}')",
        },
        "authz": {
            "cluster": AUTHZ_CLUSTER,
            "timeout": _seconds(config.authz.timeout_ms),
            "request_headers": list(config.authz.check_request_headers()),
        },
        "limits": {
            "max_request_headers_kb": config.limits.max_request_headers_kb,
            "max_request_bytes": config.limits.max_request_bytes,
            "drain_time": f"{config.limits.drain_time_s}s",
        },
        "clusters": clusters,
        "routes": [
            {
                "id": route.id,
                "match": _envoy_match(route),
                "cluster": _gateway_cluster_name(entry.via) if entry.via else route.upstream,
                "timeout": _seconds(route.timeout_ms or config.limits.request_timeout_ms),
                "public": route.public,
                "max_request_bytes": route.max_request_bytes,
                "context_extensions": _context_extensions(config, entry, route, revision),
            }
            for route in routes
        ],
    }


def access_log_manifest(config: GatewayConfig) -> str:
    """What the audit shipper tails: each entry point's log file and its Envoy admin."""
    entries = [
        {
            "name": name,
            "gateway_type": str(entry.gateway_type),
            "path": str(access_log_path(config, name)),
            "admin": f"{entry.admin.address}:{entry.admin.port}",
        }
        for name, entry in config.entry_points.items()
    ]
    return orjson.dumps({"access_logs": entries}, option=orjson.OPT_INDENT_2).decode() + "\n"
