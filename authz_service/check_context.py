"""The facts of one check, read once from Envoy's CheckRequest (headers, context extensions)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authz_service.runtime_config import (
    CLIENT_IP_HEADER,
    CTX_BUDGET_COST,
    CTX_BUDGET_METRIC,
    CTX_CONFIG_REVISION,
    CTX_GATEWAY_TYPE,
    CTX_PAID_ONLY,
    CTX_PERMISSION,
    CTX_POLICY,
    CTX_ROUTE_ID,
    CTX_SHADOW,
)


@dataclass(frozen=True, slots=True)
class CheckContext:
    request_id: str
    correlation_id: str | None
    causation_id: str | None
    method: str
    path: str
    headers: Mapping[str, str]
    context: Mapping[str, str]
    client_ip: str | None = None
    received_at: float = field(default_factory=time.time)

    @property
    def gateway_type(self) -> str:
        return self.context.get(CTX_GATEWAY_TYPE, "")

    @property
    def route_id(self) -> str:
        return self.context.get(CTX_ROUTE_ID, "")

    @property
    def permission(self) -> str:
        return self.context.get(CTX_PERMISSION, "")

    @property
    def policy_path(self) -> str:
        return self.context.get(CTX_POLICY, "").strip("/")

    @property
    def paid_only(self) -> bool:
        return self.context.get(CTX_PAID_ONLY, "false").lower() == "true"

    @property
    def budget_metric(self) -> str:
        return self.context.get(CTX_BUDGET_METRIC, "")

    @property
    def budget_cost_text(self) -> str:
        return self.context.get(CTX_BUDGET_COST, "1") or "1"

    @property
    def config_revision(self) -> str | None:
        return self.context.get(CTX_CONFIG_REVISION) or None

    @property
    def shadow_stages(self) -> frozenset[str] | None:
        """The stages the route runs in shadow mode; None when Envoy sent no `shadow` key."""
        text = self.context.get(CTX_SHADOW)
        if text is None:
            return None
        return frozenset(part.strip() for part in text.split(",") if part.strip())

    @property
    def path_only(self) -> str:
        """The path without its query string (policies and the problem `instance` use it)."""
        return self.path.split("?", 1)[0]


def client_address(vouched: str, peer: str) -> str | None:
    """The client address this hop can vouch for: the x-client-ip Envoy set, else the peer.

    Envoy's Lua filter sets it from the stream's downstream address, which honours the
    listener's trusted hops (PLANT's internal listener: the client CP saw, not CP), and
    replaces any copy a client sent. x-forwarded-for is no help here: its entries before
    the last are the client's own claims, and for a loopback peer Envoy appends its own
    address instead of the peer's.
    """
    return vouched.strip() or peer or None


def context_from_check_request(request: Any) -> CheckContext:
    """Read an envoy.service.auth.v3.CheckRequest; Envoy lowercases header names."""
    attributes = request.attributes
    http = attributes.request.http
    headers = dict(http.headers)
    if not headers and http.header_map.headers:
        headers = {h.key.lower(): h.value or h.raw_value.decode() for h in http.header_map.headers}
    address = attributes.source.address.socket_address.address
    return CheckContext(
        request_id=headers.get("x-request-id") or http.id,
        correlation_id=headers.get("x-correlation-id") or None,
        causation_id=headers.get("x-causation-id") or None,
        method=http.method,
        path=http.path,
        headers=headers,
        context=dict(attributes.context_extensions),
        client_ip=client_address(headers.get(CLIENT_IP_HEADER, ""), address),
    )
