"""Renders the bench's Envoy configs (bench/envoy/*.j2): the backend and one front per setup."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from gateway_contract.access_log import log_format
from gateway_contract.headers import (
    DECISION_HEADER,
    DENIAL_CLIENT_HEADERS,
    IDENTITY_HEADERS,
    PEER_HEADER,
    ROUTE_FACTS_HEADER,
)
from gateway_contract.http_check import HTTP_CHECK_PATH_PREFIX
from gateway_contract.route_facts import ROUTE_FACTS_KEY, ROUTE_FACTS_NAMESPACE, RouteFacts

HERE = Path(__file__).resolve().parent


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "envoy"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )


@dataclass(frozen=True)
class FrontSpec:
    """What differs between the configurations' front Envoys."""

    name: str
    mode: str  # "none" | "ext_authz" (gRPC) | "ext_authz_http" | "native"
    port: int
    admin_port: int
    authz_endpoints: tuple[str, ...] = ()
    access_log: Path | None = None  # the audit access log (JSON lines, render's format)
    extra: dict[str, Any] = field(default_factory=dict)


def _audit_log_format(transport: str) -> dict[str, str]:
    """What render gives a PLANT entry point's access log: the same fields and ids."""
    import render  # noqa: PLC0415 - a top-level script of the repo

    gateway = "PLANT"
    key, correlation = (
        render.request_key_expression(gateway),
        render.correlation_id_expression(gateway),
    )
    return log_format(gateway, key, correlation, transport=transport)


def render_backend(out: Path, *, port: int, admin_port: int, jwks_json: str) -> Path:
    text = (
        _environment()
        .get_template("backend.yaml.j2")
        .render(port=port, admin_port=admin_port, jwks_json=jwks_json)
    )
    yaml.safe_load(text)  # a template mistake fails here, naming the line
    out.write_text(text)
    return out


def render_front(out: Path, spec: FrontSpec, *, backend_port: int, route: dict[str, Any]) -> Path:
    text = (
        _environment()
        .get_template("front.yaml.j2")
        .render(
            name=spec.name,
            mode=spec.mode,
            port=spec.port,
            admin_port=spec.admin_port,
            backend_port=backend_port,
            authz_endpoints=list(spec.authz_endpoints),
            http_authz=http_authz_view(),
            authz_lb_policy="LEAST_REQUEST" if len(spec.authz_endpoints) > 1 else "ROUND_ROBIN",
            authz_timeout="1s",
            access_log_path=str(spec.access_log) if spec.access_log else "",
            access_log_format=_audit_log_format(
                "http" if spec.mode == "ext_authz_http" else "grpc"
            ),
            **route,
            **spec.extra,
        )
    )
    yaml.safe_load(text)
    out.write_text(text)
    return out


def http_authz_view() -> dict[str, Any]:
    """What render gives the HTTP transport's ext_authz filter (the same constants)."""
    return {
        "path_prefix": HTTP_CHECK_PATH_PREFIX,
        "facts_header": ROUTE_FACTS_HEADER,
        "facts_namespace": ROUTE_FACTS_NAMESPACE,
        "facts_key": ROUTE_FACTS_KEY,
        "peer_header": PEER_HEADER,
        "decision_header": DECISION_HEADER,
        "upstream_headers": list(IDENTITY_HEADERS),
        "client_headers": list(DENIAL_CLIENT_HEADERS),
    }


def route_facts(render_dir: Path, runtime: dict[str, Any], route_id: str) -> dict[str, Any]:
    """The bench route's facts as render.py wrote them: context extensions and RBAC roles."""
    rds = yaml.safe_load((render_dir / "envoy" / "plant" / "rds.yaml").read_text())
    context: dict[str, str] | None = None
    for host in rds["resources"][0]["virtual_hosts"]:
        for route in host["routes"]:
            if route.get("name") == route_id:
                per_filter = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
                context = per_filter["check_settings"]["context_extensions"]
    if context is None:
        raise ValueError(f"route {route_id!r} not found in the rendered rds.yaml")
    permission = context["permission"]
    table = runtime["rbac"][context["gateway_type"]]
    roles = sorted(r for r, grants in table.items() if "*" in grants or permission in grants)
    return {
        "context_extensions": context,
        "route_facts": RouteFacts.from_context_extensions(context).to_route_metadata(),
        "permission": permission,
        "roles": roles,
        "sent_headers": runtime["sent_headers"],  # the ext_authz `allowed_headers` render wrote
    }
