"""The routes and request targets the route cross-checks (unit and e2e) hold render against."""

from __future__ import annotations

from typing import Any

# Routes beyond config/gateway.yaml so every kind of rule is covered: a regex route, plain
# prefixes (ending in "/"), a public prefix, a route with its own shadow list.
EXTRA_ROUTES: list[dict[str, Any]] = [
    {"id": "order-item", "match": {"regex": "/api/v1/items/[0-9]+", "methods": ["GET", "PUT"]},
     "entry_points": ["plant", "cp", "pp"], "upstream": "backend", "permission": "orders:read"},
    {"id": "files", "match": {"prefix": "/files/", "methods": ["GET", "HEAD"]},
     "entry_points": ["plant", "cp", "pp"], "upstream": "backend", "public": True},
    {"id": "exports", "match": {"prefix": "/api/v1/exports/"},
     "entry_points": ["plant", "pp"], "upstream": "backend", "permission": "reports:read",
     "policy": "gateway/authz", "budget": {"metric": "reports", "units": 2},
     "shadow": {"policy": "shadow"}},
]  # fmt: skip

# Request targets, sent exactly as written: every route, its neighbours, and the tricky ones
# (trailing slash, segment boundary, query, percent-encoding, double slashes, dot segments,
# case, backslashes, `;` parameters, escaped slashes Envoy refuses).
TARGETS: tuple[str, ...] = (
    "/health", "/health/", "/HEALTH", "/health?probe=1",
    "/api/v1/status", "/api/v1/status/", "/api/v1/status?x=/../admin",
    "/api/v1/orders", "/api/v1/orders/", "/api/v1/orders/7", "/api/v1/ordersx",
    "/api/v1/orders?page=2", "/api/v1/orders/7?x=%2F", "/API/v1/orders", "/api/v1/Orders",
    "/api/v1/%6Frders", "/api/v1/orders%2F7", "/api/v1/orders%5c7", "//api/v1/orders",
    "/api//v1///orders", "/api/v1/./orders", "/api/v1/x/../orders", "/api/v1/orders/..",
    "/api/v1/orders/../admin", "/api/v1/orders/%2e%2e/admin", "/api/v1/orders/..;/admin",
    "/api/v1/orders\\..\\admin", "/api/v1/orders/.;x", "/../api/v1/orders",
    # encoded dots before a `;` parameter: Envoy decodes them and leaves the segment, which
    # backends that drop `;` parameters (Tomcat, Jetty) read as `..`: refused
    "/api/v1/orders/%2e%2e;/admin", "/api/v1/orders/.%2E;x/admin", "/api/v1/orders/%2e;/admin",
    "/api/v1/orders/%2e;/../admin", "/api/v1/admin/%2e%2e;/orders", "/api/v1/orders/..%3b/admin",
    "/api/v1/reports", "/api/v1/reports/2026", "/api/v1/reportsx", "/api/v1/reports%2Fx",
    "/api/v1/admin", "/api/v1/admin/", "/api/v1/admin/users", "/api/v1/adminx",
    "/api/v1/me", "/api/v1/me/", "/api/v1/me?x", "/api/v1/m%65",
    "/api/v1/items/12", "/api/v1/items/12/", "/api/v1/items/x", "/api/v1/items/%31%32",
    "/api/v1/items/12?q", "/api/v1/items/1{2}",
    "/files", "/files/", "/files/a/b", "/files/../api/v1/admin", "/files/%2e%2e/api/v1/admin",
    "/api/v1/exports", "/api/v1/exports/", "/api/v1/exports/1", "/api/v1/exports//1",
    "/ready", "/ready?x=1", "/nothing", "/", "/.", "",
)  # fmt: skip
METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
