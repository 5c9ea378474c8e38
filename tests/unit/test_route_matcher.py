"""The contract's matcher: Envoy's path normalization and its route choice, as rendered."""

from __future__ import annotations

import pytest

from gateway_contract.matcher import ENVOY_PATH_HANDLING, envoy_path, envoy_route_match
from gateway_contract.runtime import RouteRule

# What Envoy 1.40 did with these targets under ENVOY_PATH_HANDLING (observed against the real
# Envoy; tests/e2e/test_route_crosscheck.py keeps checking envoy_path against it). None: 400.
OBSERVED: list[tuple[str, str | None]] = [
    ("/api/v1/orders", "/api/v1/orders"),
    ("//api/v1/orders", "/api/v1/orders"),
    ("/api//v1///orders", "/api/v1/orders"),
    ("/api/v1/./orders", "/api/v1/orders"),
    ("/api/v1/x/../orders", "/api/v1/orders"),
    ("/../api/v1/orders", "/api/v1/orders"),
    ("/api/v1/orders/.", "/api/v1/orders/"),
    ("/api/v1/orders/..", "/api/v1/"),
    ("/api/v1/orders/..?a=b", "/api/v1/?a=b"),
    ("/a/b//../c", "/a/b/c"),
    ("/a//b/../c", "/a/c"),
    ("/a/b/../../../c", "/c"),
    ("/.", "/"),
    ("/..", "/"),
    ("/api/v1/%6Frders", "/api/v1/orders"),
    ("/api/v1/%6frders", "/api/v1/orders"),
    ("/a/%41%2d%5f%7e%2E", "/a/A-_~."),
    ("/api/v1/%2e%2e/v1/orders", "/api/v1/orders"),
    ("/a/.%2E", "/"),
    ("/a%2e%2e/b", "/a../b"),
    ("/a/%3a%40%21", "/a/%3a%40%21"),
    ("/a/%c3%a9", "/a/%c3%a9"),
    ("/a/%zz", "/a/%zz"),
    ("/a/%", "/a/%"),
    ("/a/{x}", "/a/%7Bx%7D"),
    ('/a/"<>|^`', "/a/%22%3C%3E%7C%5E%60"),
    ("/a/'[]()*+,=$&!@:/b", "/a/'[]()*+,=$&!@:/b"),
    ("/a/b\\..\\c", "/a/c"),
    ("/a/.;x/b", "/a/b"),
    ("/a/..;x/b", "/b"),
    ("/a/b/..;", "/a/"),
    ("/a/..%3b/b", "/a/..%3b/b"),
    ("/a/;/b", "/a/;/b"),
    # encoded dots before a `;` parameter: Envoy leaves them as a "..;" segment, which Tomcat
    # and Jetty read as ".."; the Lua filter refuses what still holds one (400)
    ("/a/%2e%2e;/b", None),
    ("/a/.%2E;x/b", None),
    ("/a/%2e;/b", None),
    ("/a/b/%2e%2e;", None),
    ("/a/%2e;/../b", "/a/b"),
    ("/a/.../b", "/a/.../b"),
    ("/API/v1/orders", "/API/v1/orders"),
    ("/api/v1/orders?x=/../y", "/api/v1/orders?x=/../y"),
    ("/a?x={y}\\z%00", "/a?x={y}\\z%00"),
    ("/a/b?c%2Fd", "/a/b?c%2Fd"),
    ("/api/v1/orders//?q", "/api/v1/orders/?q"),
    ("/api/v1/orders%2F7", None),
    ("/api/v1/orders%2f7", None),
    ("/api/v1/orders%5C7", None),
    ("/a/%5c/b", None),
    ("/a/%2e%2e%2f", None),
    ("/a/b%00", None),
    ("/api/v1/orders#frag", None),
    ("/a?x#y", None),
    ("/a b", None),
    ("/a/é", None),
    ("/a/\x7f", None),
    ("*", None),
    ("", None),
]


@pytest.mark.parametrize(("target", "routed"), OBSERVED)
def test_envoy_path_is_what_envoy_routes_and_sends(target: str, routed: str | None) -> None:
    assert envoy_path(target) == routed


def test_the_rendered_path_options_are_the_ones_the_matcher_follows() -> None:
    assert ENVOY_PATH_HANDLING == {
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
    }


@pytest.mark.parametrize(
    ("path", "methods", "expected"),
    [
        ({"prefix": "/api/v1/orders"}, (), {"path_separated_prefix": "/api/v1/orders"}),
        ({"prefix": "/files/"}, (), {"prefix": "/files/"}),
        ({"exact": "/api/v1/me"}, (), {"path": "/api/v1/me"}),
        ({"regex": "/a/[0-9]+"}, (), {"safe_regex": {"regex": "/a/[0-9]+"}}),
        (
            {"exact": "/health"},
            ("GET", "HEAD"),
            {
                "path": "/health",
                "headers": [
                    {
                        "name": ":method",
                        "string_match": {"safe_regex": {"regex": "^(GET|HEAD)$"}},
                    }
                ],
            },
        ),
    ],
)
def test_each_rule_renders_as_the_envoy_match_of_the_same_meaning(
    path: dict[str, str], methods: tuple[str, ...], expected: dict[str, object]
) -> None:
    rule = RouteRule.model_validate({"gateway_types": ["PLANT"], "methods": methods, "path": path})
    assert envoy_route_match(rule) == expected
