"""The facts of one check, read once from Envoy's CheckRequest (headers, context extensions)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_contract.headers import (
    CAUSATION_HEADER,
    CLIENT_IP_HEADER,
    CORRELATION_HEADER,
    REQUEST_ID_HEADER,
)
from gateway_contract.route_facts import RouteFacts


@dataclass(frozen=True, slots=True)
class CheckContext:
    request_id: str
    correlation_id: str | None
    causation_id: str | None
    method: str
    path: str
    headers: Mapping[str, str]
    route: RouteFacts  # what the matched route told the service
    client_ip: str | None = None
    received_at: float = field(default_factory=time.time)

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
        request_id=headers.get(REQUEST_ID_HEADER) or http.id,
        correlation_id=headers.get(CORRELATION_HEADER) or None,
        causation_id=headers.get(CAUSATION_HEADER) or None,
        method=http.method,
        path=http.path,
        headers=headers,
        route=RouteFacts.from_context_extensions(attributes.context_extensions),
        client_ip=client_address(headers.get(CLIENT_IP_HEADER, ""), address),
    )
