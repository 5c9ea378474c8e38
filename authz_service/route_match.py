"""Find the route Envoy would pick for (gateway type, method, path).

Mirrors the rendered Envoy routes (gateway_config/envoy_view.py): routes in config order, the
first match wins; a method list is an exact match on :method; `exact` and `regex` (a full RE2
match) see the path without its query string; a prefix ending in "/" is a plain prefix, any
other prefix matches on whole path segments (Envoy's path_separated_prefix: /api/v1/orders
matches /api/v1/orders and /api/v1/orders/7, not /api/v1/ordersx).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway_contract.runtime import GatewayType, PathMatch, RouteRule, RuntimeConfig


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    route_id: str
    rule: RouteRule


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def path_matches(match: PathMatch, path: str) -> bool:
    path = path.split("?", 1)[0]
    if match.exact is not None:
        return path == match.exact
    if match.prefix is not None:
        prefix = match.prefix
        if prefix.endswith("/"):
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + "/")
    if match.regex is not None:
        return _compiled(match.regex).fullmatch(path) is not None
    return False


def match_route(
    config: RuntimeConfig, gateway_type: GatewayType, method: str, path: str
) -> MatchedRoute | None:
    """The first route of this gateway type matching the request, or None (Envoy's 404)."""
    for route_id, rule in config.routes.items():
        if gateway_type not in rule.gateway_types:
            continue
        if rule.methods and method not in rule.methods:
            continue
        if path_matches(rule.path, path):
            return MatchedRoute(route_id, rule)
    return None
