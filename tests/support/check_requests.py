"""The one CheckRequest builder: a check as Envoy's ext_authz filter sends it over gRPC."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext


def check_request(
    *,
    method: str = "GET",
    path: str = "/api/v1/orders",
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    context: Mapping[str, str] | None = None,
) -> ext.CheckRequest:
    """`method path` with `headers` (plus `authorization: Bearer <token>` when a token is
    given) and the route's facts as `context` (context_extensions)."""
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    http = ac.AttributeContext.HttpRequest(method=method, path=path, headers=sent)
    return ext.CheckRequest(
        attributes=ac.AttributeContext(
            request=ac.AttributeContext.Request(http=http),
            context_extensions=dict(context or {}),
        )
    )
