"""The HTTP transport's wire format: targets, route facts, answers (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from authz_service.errors import Denial, ErrorCode, Stage, status_of
from authz_service.http_wire import (
    UnsafeHeaderError,
    allowed_response,
    caller_budget,
    check_context,
    check_path,
    denied_response,
    route_facts,
)
from authz_service.stages.decide import Allowance
from gateway_contract.headers import ROUTE_FACTS_HEADER
from gateway_contract.http_check import HTTP_UNAVAILABLE_STATUS
from gateway_contract.route_facts import RouteFacts

# a check without facts reads as a gRPC check without context extensions
NO_FACTS = RouteFacts.from_context_extensions({})


def _head_and_body(raw: bytes) -> tuple[list[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode().split("\r\n"), body


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/check/api/v1/orders?x=1", "/api/v1/orders?x=1"),
        ("/check", "/"),
        ("/check?x=1", "/?x=1"),
        ("/checkout", None),
        ("/health", None),
        ("/api/v1/orders", None),
    ],
)
def test_only_targets_under_the_check_prefix_are_checks(target: str, path: str | None) -> None:
    assert check_path(target) == path


def test_route_facts_round_trip_and_malformed_ones_are_none() -> None:
    facts = RouteFacts(gateway_type="PLANT", permission="orders:read", shadow=("a", "b"))
    assert route_facts(facts.to_route_metadata()) == facts
    assert route_facts("no-equals-sign") == NO_FACTS
    encoded = facts.to_route_metadata()
    assert route_facts(f"{encoded},{encoded}") == NO_FACTS, "sent twice: ambiguous"


def test_the_check_context_reads_what_the_grpc_transport_reads() -> None:
    facts = RouteFacts(gateway_type="CP", route_id="r", permission="p")
    headers = {
        ROUTE_FACTS_HEADER: facts.to_route_metadata(),
        "x-request-id": "rid",
        "x-correlation-id": "cid",
        "x-forwarded-for": "198.51.100.1, 203.0.113.9",
        "x-client-ip": "203.0.113.9",
        "x-authz-peer": "127.0.0.1",
    }
    check = check_context("POST", "/api/v1/orders?a=1", headers)
    assert (check.route.gateway_type, check.route.route_id, check.route.permission) == (
        "CP",
        "r",
        "p",
    )
    assert (check.request_id, check.correlation_id, check.method) == ("rid", "cid", "POST")
    assert check.client_ip == "203.0.113.9", "the address Envoy vouches for"
    without = check_context("GET", "/", {"x-authz-peer": "192.0.2.4"})
    assert without.client_ip == "192.0.2.4", "else the peer Envoy saw"
    assert check.path_only == "/api/v1/orders"
    assert check_context("GET", "/", {}).route == NO_FACTS


def test_the_caller_budget_is_envoys_expected_timeout() -> None:
    assert caller_budget({"x-envoy-expected-rq-timeout-ms": "250"}) == 0.25
    assert caller_budget({"x-envoy-expected-rq-timeout-ms": "soon"}) is None
    assert caller_budget({}) is None


def test_an_allowance_is_a_200_with_its_headers_and_no_body() -> None:
    allowance = Allowance("d1", (("x-user-id", "u1"), ("x-roles", "a,b")), {})
    lines, body = _head_and_body(allowed_response(allowance, close=False))
    assert lines[0] == "HTTP/1.1 200 OK"
    assert {"content-length: 0", "x-user-id: u1", "x-roles: a,b"} <= set(lines)
    assert body == b""
    closing, _ = _head_and_body(allowed_response(allowance, close=True))
    assert "connection: close" in closing


@pytest.mark.parametrize("value", ["a\r\nx-evil: 1", "a\nb", "a\x00b"])
def test_a_header_value_that_could_split_the_head_is_never_written(value: str) -> None:
    with pytest.raises(UnsafeHeaderError):
        allowed_response(Allowance("d", (("x-user-id", value),), {}), close=False)


def test_a_denial_is_its_status_problem_body_and_headers() -> None:
    check = check_context("GET", "/api/v1/x?q=1", {"x-correlation-id": "c-1"})
    denial = Denial(ErrorCode.TOKEN_MISSING, Stage.AUTHENTICATE, "a bearer token is required")
    lines, body = _head_and_body(denied_response(denial, check, head_only=False, close=False))
    assert lines[0] == "HTTP/1.1 401 Unauthorized"
    assert "content-type: application/problem+json" in lines
    assert "x-correlation-id: c-1" in lines
    assert "x-authz-decision: deny" in lines
    assert f"content-length: {len(body)}" in lines
    problem = orjson.loads(body)
    assert (problem["code"], problem["instance"], problem["correlation_id"]) == (
        "token_missing",
        "/api/v1/x",
        "c-1",
    )


def test_a_head_denial_announces_the_body_it_does_not_send() -> None:
    check = check_context("HEAD", "/x", {})
    denial = Denial(ErrorCode.PERMISSION_DENIED, Stage.AUTHORIZE, "no")
    full = denied_response(denial, check, head_only=False, close=False)
    head = denied_response(denial, check, head_only=True, close=False)
    assert _head_and_body(head)[1] == b""
    assert _head_and_body(head)[0] == _head_and_body(full)[0]


def test_a_503_denial_travels_as_the_sentinel_status_with_its_body() -> None:
    """Envoy drops the body of any 5xx; render's mapper restores exactly 503 for this one."""
    check = check_context("GET", "/x", {})
    denial = Denial(ErrorCode.DEPENDENCY_UNAVAILABLE, Stage.POLICY, "opa is unavailable")
    lines, body = _head_and_body(denied_response(denial, check, head_only=False, close=False))
    assert lines[0].startswith(f"HTTP/1.1 {HTTP_UNAVAILABLE_STATUS} ")
    assert orjson.loads(body)["status"] == 503


def test_every_server_error_denial_is_a_503() -> None:
    """The mapper restores 503 only: a new 5xx code would need its own sentinel."""
    assert {status_of(code) for code in ErrorCode if status_of(code) >= 500} == {503}
