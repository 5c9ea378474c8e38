"""Every reply Envoy answers itself, as problem+json: the local-reply mappers, first match wins.

A client must never get a reply in another format, whichever stage refused its request: the
codec (400, 426, 431, 501), the connection manager (400, 404, 408, 501), the gateway's Lua
filter (414, 501), the buffer filter (413), the router (404, 502, 503, 504) or ext_authz when
the authz service fails (503). Denials the authz service writes keep their own body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway_config.models import HTTP_METHODS
from gateway_contract.http_check import HTTP_UNAVAILABLE_STATUS

# Envoy's details of a local reply the gateway's Lua filter sent (request_ids.lua.j2); its
# body is the detail shown to the client.
LUA_RESPONSE = "response.code_details == 'lua_response'"
NOT_AN_AUTHZ_DENIAL = "response.code_details != 'ext_authz_denied'"


@dataclass(frozen=True)
class LocalReply:
    """One mapper: when `when` holds, the reply becomes this problem (status rewritten if set)."""

    when: str  # CEL over Envoy's `response` attributes
    status: int | None  # None: the status Envoy chose (the catch-all)
    code: str
    title: str
    detail: str = "%RESPONSE_CODE_DETAILS%"
    rewrite_status: bool = False
    keep_body: bool = False  # only the status changes: the authz service's body stays

    @property
    def status_json(self) -> str:
        """The problem's `status` member as a json_format value."""
        return json.dumps("%RESPONSE_CODE%" if self.status is None else self.status)


def _by_status(status: int, code: str, title: str) -> LocalReply:
    return LocalReply(f"response.code == {status} && {NOT_AN_AUTHZ_DENIAL}", status, code, title)


# What the Lua filter answers a method the gateway never routes (CONNECT, TRACE, ...) with.
UNSUPPORTED_METHOD_DETAIL = f"the gateway routes only {', '.join(HTTP_METHODS)}"
# An upstream's own error reply whose body is not problem+json is replaced by this problem
# (docs/ARCHITECTURE.md, "Replies"); its status and headers are kept.
UPSTREAM_ERROR = ("upstream_error", "Upstream error")

LOCAL_REPLIES: tuple[LocalReply, ...] = (
    # the HTTP transport's 503 denials (gateway_contract.http_check): their status
    # back, their own problem body kept
    LocalReply(f"response.code == {HTTP_UNAVAILABLE_STATUS} && !({NOT_AN_AUTHZ_DENIAL})", 503,
               "", "", rewrite_status=True, keep_body=True),
    LocalReply("response.code_details == 'ext_authz_error'", 503, "authz_unavailable",
               "Authorization service unavailable"),
    # the Lua filter's refusals, before any check: its body is the detail
    LocalReply(f"response.code == 414 && {LUA_RESPONSE}", 414, "uri_too_long", "URI too long",
               detail="%LOCAL_REPLY_BODY%"),
    LocalReply(f"response.code == 501 && {LUA_RESPONSE}", 501, "not_implemented",
               "Not implemented", detail="%LOCAL_REPLY_BODY%"),
    LocalReply(f"response.code == 400 && {LUA_RESPONSE}", 400, "bad_request", "Bad request",
               detail="%LOCAL_REPLY_BODY%"),
    # request forms the connection manager refuses before any filter: not a permission matter
    # (Envoy says 403) nor a missing resource (404), but something the gateway does not do
    LocalReply("response.code_details == 'upgrade_failed'", 501, "not_implemented",
               "Not implemented", detail="protocol upgrades (Upgrade, CONNECT) are not supported",
               rewrite_status=True),
    LocalReply("response.code_details == 'absolute_path_rejected'", 501, "not_implemented",
               "Not implemented", detail="only a path is a request target here (not OPTIONS *)",
               rewrite_status=True),
    _by_status(400, "bad_request", "Bad request"),
    _by_status(404, "not_found", "Not found"),
    _by_status(408, "request_timeout", "Request timeout"),
    _by_status(413, "payload_too_large", "Payload too large"),
    _by_status(414, "uri_too_long", "URI too long"),
    _by_status(426, "upgrade_required", "Upgrade required"),
    _by_status(431, "request_header_fields_too_large", "Request header fields too large"),
    _by_status(500, "gateway_error", "Gateway error"),
    _by_status(501, "not_implemented", "Not implemented"),
    _by_status(502, "bad_gateway", "Bad gateway"),
    _by_status(503, "upstream_unavailable", "Upstream unavailable"),
    _by_status(504, "upstream_timeout", "Upstream timeout"),
    # any other status Envoy may answer with (a future filter, overload): still a problem
    LocalReply(f"response.code >= 400 && {NOT_AN_AUTHZ_DENIAL}", None, "gateway_error",
               "Gateway error"),
)  # fmt: skip
