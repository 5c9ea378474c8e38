"""The values the Envoy templates need, per entry point, computed from the gateway config."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from gateway_config.access_logs import access_log_path
from gateway_config.local_replies import UNSUPPORTED_METHOD_DETAIL, UPSTREAM_ERROR
from gateway_config.models import (
    HTTP_METHODS,
    EntryPoint,
    GatewayConfig,
    HealthCheck,
    Route,
    Upstream,
)
from gateway_contract.access_log import AUDIT_USER_AGENT_MAX_BYTES
from gateway_contract.headers import (
    AUTHORIZATION_HEADER,
    AUTHZ_HEADER_PREFIX,
    CAUSATION_HEADER,
    CLIENT_CLAIM_HEADERS,
    CLIENT_IP_HEADER,
    CORRELATION_HEADER,
    DECISION_HEADER,
    DENIAL_CLIENT_HEADERS,
    FORWARDED_FOR_HEADER,
    IDENTITY_HEADERS,
    PEER_HEADER,
    ROUTE_FACTS_HEADER,
)
from gateway_contract.http_check import HTTP_CHECK_PATH_PREFIX
from gateway_contract.matcher import ENVOY_PATH_HANDLING, envoy_route_match
from gateway_contract.route_facts import (
    ROUTE_FACTS_KEY,
    ROUTE_FACTS_NAMESPACE,
    RouteFacts,
    facts_of_route,
    route_facts_formatter,
)
from gateway_contract.runtime import RuntimeConfig

AUTHZ_CLUSTER = "authz"
AUTHZ_HTTP_IDLE_TIMEOUT = "60s"
# Google's metadata server, which mints the ID tokens of gcp_authn (Cloud Run, GKE).
GCP_METADATA_CLUSTER = "gcp_metadata"
GCP_METADATA_HOST = "metadata.google.internal"
# Cloud Run reads the invoker's token here and leaves Authorization (the client's JWT) alone.
ID_TOKEN_HEADER = "x-serverless-authorization"
# the route rds.yaml.j2 renders for the entry point's readiness path: health-check traffic,
# left out of the audit access log
READINESS_ROUTE = "readiness"
# the Server header of every reply: not Envoy's name and version, nor the upstream's
SERVER_NAME = "gateway"


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
    idle_timeout: str | None = None,
    health_check: HealthCheck | None = None,
    tls: bool = False,
    id_token_audience: str | None = None,
) -> dict[str, Any]:
    if id_token_audience is not None:
        # Envoy's health checker sends no ID token: the service would answer 403 and the hop
        # would be marked down. Cloud Run checks its own instances.
        health_check = None
    dns_type = "LOGICAL_DNS" if tls else "STRICT_DNS"  # a TLS hop: a front end of many addresses
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else dns_type,
        "host": host,
        "port": port,
        "connect_timeout": _seconds(connect_timeout_ms),
        "http2": http2,
        "idle_timeout": idle_timeout,
        "tls": tls,
        "id_token_audience": id_token_audience,
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


def _gateway_cluster_name(entry_name: str) -> str:
    return f"gateway_{entry_name}"


def _route_cluster(entry: EntryPoint, route: Route) -> str:
    return _gateway_cluster_name(entry.via) if entry.via else route.upstream


def _host_rewrite(cluster: dict[str, Any], upstream: Upstream | None) -> str | None:
    """The Host a route sends: a TLS hop or upstream is a virtual host of its own (Cloud Run
    routes by Host): its name; an upstream its own authority unless it keeps the client's."""
    if cluster["tls"]:
        return str(cluster["host"])
    if upstream is None or upstream.preserve_host:
        return None
    return f"{upstream.host}:{upstream.port}"


def _removed_headers(upstream: Upstream | None) -> list[str]:
    """Request headers a route to an upstream drops: the client's bearer token, unless the
    upstream is to get it (a hop keeps it: the next listener checks it again)."""
    if upstream is None or upstream.forward_authorization:
        return []
    return [AUTHORIZATION_HEADER]


def _listeners(name: str, entry: EntryPoint) -> list[dict[str, Any]]:
    """The public listener, and the internal one for hops when others forward to it.

    Clients can never set x-causation-id (nor any identity header): the public listener
    strips it. Only the internal listener, which only hops reach, keeps the one a hop set.
    Neither passes a client's claim about the request (CLIENT_CLAIM_HEADERS): a hop never
    sets one either.
    """
    identity = [h for h in IDENTITY_HEADERS if h != CORRELATION_HEADER]
    public_strip = [*identity, CAUSATION_HEADER, *CLIENT_CLAIM_HEADERS]
    listeners = [
        {"name": name, "address": entry.address, "port": entry.port,
         "strip_headers": public_strip, "internal": False,
         "xff_trusted_hops": entry.xff_trusted_hops},
    ]  # fmt: skip
    if entry.internal is not None:
        listeners.append(
            {"name": f"{name}_internal", "address": entry.internal.address,
             "port": entry.internal.port, "internal": True,
             "xff_trusted_hops": entry.internal.xff_trusted_hops,
             "strip_headers": [h for h in public_strip if h != CAUSATION_HEADER]}
        )  # fmt: skip
    return listeners


def _forward_target(config: GatewayConfig, entry: EntryPoint) -> tuple[str, int]:
    """Where a hop reaches the entry point it forwards to: that one's internal listener.

    A target whose hops cross a TLS front end (Cloud Run: `hop_port`, `hop_tls`) is reached
    there instead; the front end admits only invokers holding an ID token for it.
    """
    assert entry.via is not None
    target = config.entry_points[entry.via]
    if target.hop_port is not None:
        address = target.address
        host = target.host or ("127.0.0.1" if address in ("0.0.0.0", "::") else address)
        return host, target.hop_port
    if target.internal is None:  # refused by the config checks; never rendered
        raise ValueError(f"entry point {entry.via!r} has no internal listener")
    address = target.internal.address
    host = target.host or ("127.0.0.1" if address in ("0.0.0.0", "::") else address)
    return host, target.internal.port


def _clusters(config: GatewayConfig, entry: EntryPoint, routes: list[Route]) -> list[Any]:
    """The authz service, then the entry point it forwards to or the routes' upstreams."""
    authz = config.authz
    # HTTP/1.1 to the HTTP transport: below the service's own idle timeout (300 s), so Envoy
    # never sends a check on a connection the service is closing
    http = authz.transport == "http"
    idle = AUTHZ_HTTP_IDLE_TIMEOUT if http else None
    clusters = [_cluster(AUTHZ_CLUSTER, authz.host, authz.port, authz.connect_timeout_ms,
                         http2=not http, idle_timeout=idle)]  # fmt: skip
    if entry.via is not None:
        target = config.entry_points[entry.via]
        host, port = _forward_target(config, entry)
        readiness = HealthCheck(path=target.readiness_path)
        clusters.append(
            _cluster(_gateway_cluster_name(entry.via), host, port, 1000, health_check=readiness,
                     tls=target.hop_tls, id_token_audience=target.hop_id_token_audience)
        )  # fmt: skip
    else:
        for upstream_name in dict.fromkeys(route.upstream for route in routes):
            upstream = config.upstreams[upstream_name]
            clusters.append(
                _cluster(upstream_name, upstream.host, upstream.port, upstream.connect_timeout_ms,
                         health_check=upstream.health_check, tls=upstream.tls,
                         id_token_audience=upstream.id_token_audience)
            )  # fmt: skip
    if any(cluster["id_token_audience"] for cluster in clusters):
        clusters.append(_cluster(GCP_METADATA_CLUSTER, GCP_METADATA_HOST, 80, 1000))
    return clusters


def _limits(config: GatewayConfig) -> dict[str, Any]:
    limits = config.limits
    return {
        "max_request_headers_kb": limits.max_request_headers_kb,
        "max_path_bytes": limits.max_path_bytes,
        "max_request_bytes": limits.max_request_bytes,
        "request_headers_timeout": _seconds(limits.request_headers_timeout_ms),
        "request_receive_timeout": _seconds(limits.request_receive_timeout_ms),
        "drain_time": f"{limits.drain_time_s}s",
    }


def _route_views(
    config: GatewayConfig,
    runtime: RuntimeConfig,
    entry: EntryPoint,
    routes: list[Route],
    clusters: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    by_name = {cluster["name"]: cluster for cluster in clusters}
    # the budget is charged once, by the hop that reaches the upstream (PLANT), not per hop
    charges_budget = entry.via is None

    def upstream(route: Route) -> Upstream | None:
        return config.upstreams[route.upstream] if entry.via is None else None

    return [
        {
            "id": route.id,
            "match": envoy_route_match(runtime.routes[route.id]),
            "cluster": _route_cluster(entry, route),
            "host_rewrite": _host_rewrite(by_name[_route_cluster(entry, route)], upstream(route)),
            "remove_headers": _removed_headers(upstream(route)),
            "timeout": _seconds(route.timeout_ms or config.limits.request_timeout_ms),
            "public": route.public,
            "max_request_bytes": route.max_request_bytes,
            **_facts(
                facts_of_route(runtime, route.id, entry.gateway_type, charges_budget=charges_budget)
            ),
        }
        for route in routes
    ]


def _facts(facts: RouteFacts) -> dict[str, Any]:
    """A route's facts in both renderings: the gRPC check's context extensions, and the
    route-metadata string the HTTP check's header is read from."""
    return {
        "context_extensions": facts.to_context_extensions(),
        "route_facts": facts.to_route_metadata(),
    }


def _authz_view(config: GatewayConfig) -> dict[str, Any]:
    authz = config.authz
    return {
        "cluster": AUTHZ_CLUSTER,
        "transport": authz.transport,
        "timeout": _seconds(authz.timeout_ms),
        "request_headers": list(authz.check_request_headers()),
        # the HTTP transport: where checks go, the facts' header, what goes where back
        "path_prefix": HTTP_CHECK_PATH_PREFIX,
        "facts_header": ROUTE_FACTS_HEADER,
        "facts_namespace": ROUTE_FACTS_NAMESPACE,
        "facts_key": ROUTE_FACTS_KEY,
        "facts_formatter": route_facts_formatter(),
        "peer_header": PEER_HEADER,
        "decision_header": DECISION_HEADER,
        "upstream_headers": list(IDENTITY_HEADERS),
        "client_headers": list(DENIAL_CLIENT_HEADERS),
    }


def entry_point_view(
    config: GatewayConfig, runtime: RuntimeConfig, name: str, config_dir: Path
) -> dict[str, Any]:
    """Everything the bootstrap, lds, cds and rds templates need for one entry point."""
    entry = config.entry_points[name]
    routes = [route for route in config.routes if name in route.entry_points]
    clusters = _clusters(config, entry, routes)
    return {
        "name": name,
        "gateway_type": str(entry.gateway_type),
        "listeners": _listeners(name, entry),
        "admin": entry.admin.model_dump(),
        "config_dir": str(config_dir),
        "readiness_path": entry.readiness_path,
        "sets_causation_id": entry.via is not None,
        # only the hop that talks to the upstreams sees their replies: CP/PP get PLANT's problems
        "reaches_upstreams": entry.via is None,
        "correlation_header": CORRELATION_HEADER,
        "causation_header": CAUSATION_HEADER,
        "client_ip_header": CLIENT_IP_HEADER,
        "server_name": SERVER_NAME,
        "audit_user_agent_max_bytes": AUDIT_USER_AGENT_MAX_BYTES,
        "forwarded_for_header": FORWARDED_FOR_HEADER,
        "methods": list(HTTP_METHODS),
        "authz_header_prefix": AUTHZ_HEADER_PREFIX,
        "unsupported_method_detail": UNSUPPORTED_METHOD_DETAIL,
        "upstream_error": {"code": UPSTREAM_ERROR[0], "title": UPSTREAM_ERROR[1]},
        "access_log": {
            "path": str(access_log_path(config, name)),
            # readiness probes (other hops' health checks of this one) are not requests
            "filter": f"!(has(xds.route_name) && xds.route_name == '{READINESS_ROUTE}')",
        },
        "authz": _authz_view(config),
        "limits": _limits(config),
        "path_handling": ENVOY_PATH_HANDLING,
        "clusters": clusters,
        "tls_ca_file": config.tls_ca_file,
        "id_tokens": {
            "enabled": GCP_METADATA_CLUSTER in {cluster["name"] for cluster in clusters},
            "cluster": GCP_METADATA_CLUSTER,
            "header": ID_TOKEN_HEADER,
        },
        "routes": _route_views(config, runtime, entry, routes, clusters),
    }
