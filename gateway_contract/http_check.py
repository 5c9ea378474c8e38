"""The HTTP ext_authz transport's wire, besides its headers: where checks go, one status.

The route facts it carries are `route_facts.RouteFacts.to_route_metadata()`; its header
names and lists are in `headers`.
"""

from __future__ import annotations

# Envoy sends every check to the service under this prefix (`http_service.path_prefix`), so
# a check of any path can never be mistaken for the service's own endpoints (/health).
HTTP_CHECK_PATH_PREFIX = "/check"
# Envoy's http_service takes any 5xx answer for the service failing and drops its body (the
# client would get Envoy's own `authz_unavailable`, not the denial's problem). So a denial
# whose status is 503 goes to Envoy with this status (unassigned in HTTP), and render's first
# local-reply mapper turns exactly these authz denials back into a 503 keeping the body.
HTTP_UNAVAILABLE_STATUS = 460
# What Envoy adds to a client's request head when it sends it as a check: the prefix, Host,
# the route facts and peer headers, the expected timeout, and each header line's framing.
# The client's own head is bounded by Envoy's `max_request_headers_kb` (path included).
CHECK_HEAD_OVERHEAD_BYTES = 4096


def max_check_head_bytes(max_request_headers_kb: int) -> int:
    """The largest check head Envoy can send for a client head under its header limit."""
    return max_request_headers_kb * 1024 + CHECK_HEAD_OVERHEAD_BYTES
