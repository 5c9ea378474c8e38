"""Header names and lists that render and the authz service must agree on."""

from __future__ import annotations

AUTHORIZATION_HEADER = "authorization"
# Made by Envoy at every hop; never taken from a client.
REQUEST_ID_HEADER = "x-request-id"
# Kept from the client when it is a UUID, made by Envoy's Lua filter otherwise.
CORRELATION_HEADER = "x-correlation-id"
# Set by CP and PP to their own request id on what they forward; only PLANT's internal
# listener keeps one.
CAUSATION_HEADER = "x-causation-id"
USER_AGENT_HEADER = "user-agent"

# Headers the authz service sets for the upstream. Envoy strips client-supplied copies of
# every one of them before ext_authz runs, so none can be spoofed.
IDENTITY_HEADERS: tuple[str, ...] = (
    "x-user-id",
    "x-customer-id",
    "x-roles",
    "x-trial-mode",
    "x-plan",
    CORRELATION_HEADER,
    "x-budget-remaining",
    "x-authz-decision-id",
)

# The client's address as the hop vouches for it: set by Envoy (the Lua filter, from the
# connection or, behind a trusted hop, from x-forwarded-for) on every listener, replacing any
# client copy; the audit row's client_ip, the same Envoy's access log records.
CLIENT_IP_HEADER = "x-client-ip"

# What only the gateway can say about a request, in the headers proxies and frameworks use to
# say it: the client's address (x-forwarded-for is replaced by the vouched address instead),
# the host, port and prefix the client used, and a method or target other than the one routed
# (many frameworks honour these). A client's copy would reach the backend as the gateway's
# word, or make the backend serve another request than the one RBAC and the policy allowed:
# Envoy's Lua filter drops them on every listener.
CLIENT_CLAIM_HEADERS: tuple[str, ...] = (
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-rewrite-url",
)
# Set by Envoy's Lua filter on every listener to the one address it vouches for (as
# x-client-ip), so no client-written entry reaches the policy or the backend.
FORWARDED_FOR_HEADER = "x-forwarded-for"

# Request headers the service reads from every check (its CheckContext, the authenticate
# stage, the audit row). Envoy's ext_authz filter sends these plus the policy headers and
# nothing else (`allowed_headers`): a client's big request costs Envoy and Python no more.
CHECK_REQUEST_HEADERS: tuple[str, ...] = (
    AUTHORIZATION_HEADER,
    REQUEST_ID_HEADER,
    CORRELATION_HEADER,
    CAUSATION_HEADER,
    CLIENT_IP_HEADER,
    USER_AGENT_HEADER,
)

# The namespace of the service's own headers (its decision id, the HTTP transport's below):
# only the gateway writes it. Envoy's Lua filter drops every client header under it, so
# none reaches the service or the backend as if the gateway had said it.
AUTHZ_HEADER_PREFIX = "x-authz-"

# --- the HTTP ext_authz transport (Envoy's `http_service`) ---
# The route's facts (route_facts.RouteFacts.to_route_metadata), added by Envoy to every HTTP
# check from the route's metadata; it overrides any client header of the name, never trusted.
ROUTE_FACTS_HEADER = "x-authz-route"
# The downstream peer Envoy saw (the gRPC CheckRequest's source address).
PEER_HEADER = "x-authz-peer"
# The service's decision (allow|deny), put into Envoy's dynamic metadata for the access log.
DECISION_HEADER = "x-authz-decision"
# The headers Envoy adds to every HTTP check itself (never copied from the client).
HTTP_CHECK_ADDED_HEADERS: tuple[str, ...] = (ROUTE_FACTS_HEADER, PEER_HEADER)
# The headers of a denial Envoy passes to the client (the problem's own, and the id to quote).
DENIAL_CLIENT_HEADERS: tuple[str, ...] = (
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    CORRELATION_HEADER,
)
