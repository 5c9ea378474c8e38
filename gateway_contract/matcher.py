"""Which route Envoy picks for a request: the one definition render and the service share.

Render writes Envoy's side from here (`envoy_route_match`, `ENVOY_PATH_HANDLING`); Explain and
the cross-checks predict Envoy with the same module (`envoy_path`, then `match_route`). The
cross-check tests (tests/unit/test_route_crosscheck.py, tests/e2e/test_route_crosscheck.py)
hold the two against each other and against the real Envoy.

Envoy's semantics, as rendered: the path is normalized first (below); routes are tried in
config order, the first match wins; a method list is an exact match on :method; `exact` and
`regex` (a full RE2 match) see the path without its query string; a prefix ending in "/" is a
plain prefix, any other prefix matches on whole path segments (Envoy's path_separated_prefix:
/api/v1/orders matches /api/v1/orders and /api/v1/orders/7, not /api/v1/ordersx). Matching
is case-sensitive. The entry point's readiness route (`/ready`) comes before every route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway_contract.runtime import GatewayType, PathMatch, RouteRule, RuntimeConfig

# The HTTP connection manager's path options render writes on every listener: RFC 3986
# normalization, merged slashes, and a 400 for an escaped slash (%2F, %5C) in the path.
ENVOY_PATH_HANDLING: dict[str, Any] = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
}

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# characters Envoy's normalization percent-encodes in a path (and `\`, which it reads as `/`)
_ESCAPED_IN_PATH = frozenset('"<>^`{|}')
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_ESCAPED_SLASH = re.compile(r"%(2[Ff]|5[Cc])")


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    route_id: str
    rule: RouteRule


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _dot_segment(segment: str) -> str | None:
    """ "." or ".." when the segment is one (a `;` parameter after it is dropped with it)."""
    name = segment.split(";", 1)[0]
    return name if name in (".", "..") and (name == segment or segment[len(name)] == ";") else None


def _decoded(segment: str) -> str:
    return _ESCAPE.sub(_decode_unreserved, segment)


def _hidden_dots(raw: str) -> bool:
    """A segment of percent-encoded dots with a `;` parameter (`%2e%2e;x`): Envoy decodes it
    but does not read it as a dot segment, while backends that drop `;` parameters (Tomcat,
    Jetty) read `..;x` as `..`; the gateway refuses what still holds one (request_ids.lua.j2)."""
    name, semicolon, _ = raw.partition(";")
    return bool(semicolon) and name not in (".", "..") and _decoded(name) in (".", "..")


def _remove_dot_segments(raw_path: str) -> tuple[str, bool]:
    """The path without its dot segments, and whether a hidden-dots segment is left in it."""
    segments = raw_path.split("/")[1:]
    kept: list[tuple[str, bool]] = []
    for index, raw in enumerate(segments):
        last = index == len(segments) - 1
        hidden = _hidden_dots(raw)
        segment = _decoded(raw)
        dots = None if hidden else _dot_segment(segment)
        if dots is None:
            kept.append((segment, hidden))
            continue
        if dots == ".." and kept:
            kept.pop()
        if last:
            kept.append(("", False))  # /a/b/.. is /a/, a directory
    return "/" + "/".join(segment for segment, _ in kept), any(h for _, h in kept)


def envoy_path(target: str) -> str | None:
    """The request target (path and query) as Envoy routes it and sends it on; None when
    Envoy refuses it with a 400 (an escaped slash or NUL in the path, a fragment, a byte a
    request line cannot hold).

    The query is left as it is. The path: percent-encoded unreserved characters decoded,
    `\\` read as `/`, `"<>^`{|}` percent-encoded, dot segments removed (also `.;x` and `..;x`;
    None when a segment of encoded dots with a `;` parameter is left, which the gateway's Lua
    filter refuses), then repeated slashes merged. Matches what Envoy 1.40 does with
    ENVOY_PATH_HANDLING (checked against the real Envoy by tests/e2e/test_route_crosscheck.py).
    """
    if not target.startswith("/") or "#" in target:
        return None
    if any(ord(char) <= 0x20 or ord(char) >= 0x7F for char in target):
        return None
    path, mark, query = target.partition("?")
    if _ESCAPED_SLASH.search(path) or "%00" in path:
        return None
    path = path.replace("\\", "/")
    path = "".join(f"%{ord(char):02X}" if char in _ESCAPED_IN_PATH else char for char in path)
    path, hidden_dots = _remove_dot_segments(path)
    if hidden_dots:
        return None
    return re.sub(r"/{2,}", "/", path) + mark + query


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def path_matches(match: PathMatch, path: str) -> bool:
    """Does a route's path rule match `path` (as Envoy routes it: see envoy_path)?"""
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
    """The first route of this gateway type matching the request, or None (Envoy's 404).

    `path` is the path as Envoy routes it (`envoy_path` of the client's request target).
    """
    for route_id, rule in config.routes.items():
        if gateway_type not in rule.gateway_types:
            continue
        if rule.methods and method not in rule.methods:
            continue
        if path_matches(rule.path, path):
            return MatchedRoute(route_id, rule)
    return None


def envoy_route_match(rule: RouteRule) -> dict[str, Any]:
    """The Envoy RouteMatch of a route: the same rule `match_route` applies."""
    match: dict[str, Any]
    if rule.path.prefix is not None:
        prefix = rule.path.prefix
        match = {"prefix": prefix} if prefix.endswith("/") else {"path_separated_prefix": prefix}
    elif rule.path.exact is not None:
        match = {"path": rule.path.exact}
    else:
        match = {"safe_regex": {"regex": rule.path.regex}}
    if rule.methods:
        methods = "|".join(rule.methods)
        match["headers"] = [
            {"name": ":method", "string_match": {"safe_regex": {"regex": f"^({methods})$"}}}
        ]
    return match
