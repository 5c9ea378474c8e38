"""Through the real Envoys, backend and authz service: routing, header hygiene, errors, chaining."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway_contract.headers import IDENTITY_HEADERS
from tests.e2e._gateway_stack import GatewayStack, Reply
from tests.support.waiting import eventually

ENTRIES = ("plant", "cp", "pp")
PROBLEM_JSON = "application/problem+json"


def _echoed(reply: Reply) -> dict[str, str]:
    """The request headers the backend received, lower-cased."""
    assert reply.status == 200, reply.body[:500]
    return {k.lower(): v for k, v in reply.json()["headers"].items()}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- routing per entry point -------------------------------------------------------------


@pytest.mark.parametrize("entry", ["plant", "cp"])
def test_customer_lists_orders_on_plant_and_cp(gateway_stack: GatewayStack, entry: str) -> None:
    token = gateway_stack.sign_token(roles=("customer",))
    reply = gateway_stack.request(entry, "GET", "/api/v1/orders?page=2", token=token)
    assert reply.status == 200
    body = reply.json()
    assert (body["resource"], body["method"], body["path"]) == ("orders", "GET", "/api/v1/orders")
    assert body["query"] == "page=2"


def test_each_entry_point_applies_its_own_rbac_table(gateway_stack: GatewayStack) -> None:
    customer = gateway_stack.sign_token(roles=("customer",))
    denied = gateway_stack.request("pp", "GET", "/api/v1/orders", token=customer)
    assert denied.status == 403
    assert denied.json()["gateway_type"] == "PP"
    support = gateway_stack.sign_token(sub="agent-1", roles=("support",), customer_id=None)
    assert gateway_stack.request("pp", "GET", "/api/v1/orders", token=support).status == 200


def test_admin_route_exists_only_where_configured(gateway_stack: GatewayStack) -> None:
    admin = gateway_stack.sign_token(sub="root", roles=("admin",), customer_id=None)
    for entry in ("plant", "pp"):
        reply = gateway_stack.request(entry, "GET", "/api/v1/admin/users", token=admin)
        assert reply.status == 200, (entry, reply.body[:300])
        assert reply.json()["resource"] == "admin"
    not_on_cp = gateway_stack.request("cp", "GET", "/api/v1/admin/users", token=admin)
    assert not_on_cp.status == 404
    assert not_on_cp.content_type == PROBLEM_JSON


def test_method_is_part_of_the_route(gateway_stack: GatewayStack) -> None:
    viewer = gateway_stack.sign_token(roles=("viewer",))
    assert gateway_stack.request("plant", "GET", "/api/v1/orders", token=viewer).status == 200
    write = gateway_stack.request("plant", "POST", "/api/v1/orders", token=viewer, body=b"{}")
    assert write.status == 403
    assert write.json()["permission"] == "orders:write"
    assert gateway_stack.request("plant", "DELETE", "/api/v1/orders", token=viewer).status == 404


def test_prefix_routes_match_whole_segments_only(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("customer",))
    assert gateway_stack.request("plant", "GET", "/api/v1/orders/7", token=token).status == 200
    assert gateway_stack.request("plant", "GET", "/api/v1/ordersx", token=token).status == 404


# --- public routes -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_public_routes_need_no_token(gateway_stack: GatewayStack, entry: str) -> None:
    health = gateway_stack.request(entry, "GET", "/health")
    assert health.status == 200
    assert health.json()["status"] == "ok"
    status = gateway_stack.request(entry, "GET", "/api/v1/status")
    assert status.json()["resource"] == "status"
    assert gateway_stack.request(entry, "GET", "/ready").json() == {"status": "ready"}
    protected = gateway_stack.request(entry, "GET", "/api/v1/me")
    assert protected.status == 401
    assert protected.content_type == PROBLEM_JSON
    assert protected.headers["www-authenticate"].startswith("Bearer")


# --- spoofed identity headers -------------------------------------------------------------


def _spoofed() -> dict[str, str]:
    headers = {name: "spoofed" for name in IDENTITY_HEADERS}
    # underscore twins reach some (CGI-style) backends under the dashed name
    headers.update({name.replace("-", "_"): "spoofed" for name in IDENTITY_HEADERS})
    return headers


@pytest.mark.parametrize("entry", ENTRIES)
def test_spoofed_identity_headers_never_reach_the_backend(
    gateway_stack: GatewayStack, entry: str
) -> None:
    echoed = _echoed(gateway_stack.request(entry, "GET", "/api/v1/status", headers=_spoofed()))
    leaked = {k: v for k, v in echoed.items() if v == "spoofed"}
    assert leaked == {}
    assert not {h for h in IDENTITY_HEADERS if h != "x-correlation-id"} & set(echoed)
    assert _is_uuid(echoed["x-correlation-id"])


@pytest.mark.parametrize("entry", ["plant", "cp"])
def test_identity_headers_come_from_the_authz_service(
    gateway_stack: GatewayStack, entry: str
) -> None:
    token = gateway_stack.sign_token(sub="alice", roles=("customer",), customer_id="cust-7")
    reply = gateway_stack.request(entry, "GET", "/api/v1/me", token=token, headers=_spoofed())
    echoed = _echoed(reply)
    assert echoed["x-user-id"] == "alice"
    assert echoed["x-customer-id"] == "cust-7"
    assert echoed["x-roles"] == "customer"
    assert "spoofed" not in echoed.values()


# --- path tricks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1//admin",
        "/api/v1/./admin",
        "/api/v1/orders/../admin",
        "/api/v1/%2e/admin",
        "/api//v1///admin/users",
    ],
)
def test_path_tricks_land_on_the_normalized_route(gateway_stack: GatewayStack, path: str) -> None:
    customer = gateway_stack.sign_token(roles=("customer",))
    reply = gateway_stack.request("plant", "GET", path, token=customer)
    assert reply.status == 403, reply.body[:300]  # the admin route's rule applied
    assert reply.json()["permission"] == "admin:manage"
    admin = gateway_stack.sign_token(sub="root", roles=("admin",), customer_id=None)
    allowed = gateway_stack.request("plant", "GET", path, token=admin)
    assert allowed.json()["path"].startswith("/api/v1/admin")  # the backend sees the clean path


@pytest.mark.parametrize(
    "path", ["/api/v1/orders%2F..%2Fadmin", "/api/v1%2Fadmin", "/api/v1/orders/..%5Cadmin"]
)
def test_escaped_slashes_are_rejected(gateway_stack: GatewayStack, path: str) -> None:
    admin = gateway_stack.sign_token(sub="root", roles=("admin",), customer_id=None)
    reply = gateway_stack.request("plant", "GET", path, token=admin)
    assert reply.status == 400
    assert reply.content_type == PROBLEM_JSON
    assert reply.json()["type"].endswith("/bad_request")


def test_path_tricks_cannot_reach_a_route_missing_on_cp(gateway_stack: GatewayStack) -> None:
    admin = gateway_stack.sign_token(sub="root", roles=("admin",), customer_id=None)
    for path in ("/api/v1//admin", "/api/v1/orders/../admin"):
        assert gateway_stack.request("cp", "GET", path, token=admin).status == 404


# --- request ids and chaining ---------------------------------------------------------------


def test_client_correlation_id_is_kept_when_it_is_a_uuid(gateway_stack: GatewayStack) -> None:
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(roles=("customer",))
    reply = gateway_stack.request(
        "cp", "GET", "/api/v1/orders", token=token, headers={"x-correlation-id": mine.upper()}
    )
    echoed = _echoed(reply)
    assert echoed["x-correlation-id"] == mine
    assert reply.headers["x-correlation-id"] == mine
    assert _is_uuid(echoed["x-request-id"])


def test_non_uuid_correlation_id_is_replaced(gateway_stack: GatewayStack) -> None:
    reply = gateway_stack.request(
        "plant", "GET", "/api/v1/status", headers={"x-correlation-id": "'; drop table"}
    )
    echoed = _echoed(reply)
    assert _is_uuid(echoed["x-correlation-id"])
    assert echoed["x-correlation-id"] == reply.headers["x-request-id"]


def test_correlation_id_is_visible_to_ext_authz(gateway_stack: GatewayStack) -> None:
    mine = str(uuid.uuid4())
    denied = gateway_stack.request("plant", "GET", "/api/v1/me", headers={"x-correlation-id": mine})
    assert denied.status == 401
    assert denied.json()["correlation_id"] == mine  # the authz service wrote it into the problem


@pytest.mark.parametrize("entry", ["cp", "pp"])
def test_cp_and_pp_chain_through_plant_with_causation_ids(
    gateway_stack: GatewayStack, entry: str
) -> None:
    mine = str(uuid.uuid4())
    token = gateway_stack.sign_token(sub="root", roles=("admin",), customer_id=None)
    if entry == "cp":
        token = gateway_stack.sign_token(roles=("customer",))
    reply = gateway_stack.request(
        entry,
        "GET",
        "/api/v1/me",
        token=token,
        headers={"x-correlation-id": mine, "x-causation-id": str(uuid.uuid4())},
    )
    echoed = _echoed(reply)
    entry_request_id = reply.headers["x-request-id"]
    # the backend got PLANT's request, caused by the entry point's own request
    assert echoed["x-causation-id"] == entry_request_id
    assert echoed["x-request-id"] != entry_request_id
    assert _is_uuid(echoed["x-request-id"])
    assert echoed["x-correlation-id"] == mine


def test_direct_plant_request_has_no_forged_causation(gateway_stack: GatewayStack) -> None:
    echoed = _echoed(
        gateway_stack.request("plant", "GET", "/api/v1/status", headers={"x-causation-id": "x"})
    )
    assert "x-causation-id" not in echoed


# --- Envoy's own errors as problem+json ------------------------------------------------------


def _assert_problem(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body[:500]
    assert reply.content_type == PROBLEM_JSON
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == status
    assert problem["type"] == f"https://gateway.example/problems/{code}"
    assert problem["title"]
    return problem


def test_unknown_path_is_a_404_problem_with_the_correlation_id(gateway_stack: GatewayStack) -> None:
    mine = str(uuid.uuid4())
    reply = gateway_stack.request("cp", "GET", "/nowhere", headers={"x-correlation-id": mine})
    problem = _assert_problem(reply, 404, "not_found")
    assert problem["correlation_id"] == mine
    assert problem["instance"] == "/nowhere"


def test_upstream_timeout_is_a_504_problem(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("viewer",))
    reply = gateway_stack.request("plant", "GET", "/api/v1/slow?ms=3000", token=token)
    _assert_problem(reply, 504, "upstream_timeout")
    fast = gateway_stack.request("plant", "GET", "/api/v1/slow?ms=10", token=token)
    assert fast.status == 200


def test_large_bodies_only_where_configured(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(roles=("customer",))
    two_mib = b"x" * (2 * 1_048_576)
    too_large = gateway_stack.request("plant", "POST", "/api/v1/orders", token=token, body=two_mib)
    _assert_problem(too_large, 413, "payload_too_large")
    upload = gateway_stack.request("plant", "POST", "/api/v1/uploads", token=token, body=two_mib)
    assert upload.status == 200
    assert upload.json()["body_bytes"] == len(two_mib)


def test_oversized_headers_are_a_431_problem(gateway_stack: GatewayStack) -> None:
    reply = gateway_stack.request("plant", "GET", "/health", headers={"x-big": "a" * 70_000})
    _assert_problem(reply, 431, "request_header_fields_too_large")


def test_authz_denials_keep_the_authz_service_body(gateway_stack: GatewayStack) -> None:
    reply = gateway_stack.request("pp", "GET", "/api/v1/me", token="not-a-jwt")
    assert reply.status == 401
    assert reply.content_type == PROBLEM_JSON
    problem = reply.json()
    assert problem["type"].startswith("https://gateway.example/problems/token_")
    assert problem["stage"] == "authenticate"  # written by the authz service, not by Envoy


def test_access_log_is_json_on_stdout_with_the_request_id(gateway_stack: GatewayStack) -> None:
    reply = gateway_stack.request("cp", "GET", "/api/v1/status")
    request_id = reply.headers["x-request-id"]
    log_path = Path(gateway_stack.envoys["cp"].log_path)

    def entry() -> dict[str, Any] | None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and request_id in line:
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        return None

    found = eventually(entry, 10, what="an access log line for the request")
    assert found["gateway_type"] == "CP"
    assert found["route"] == "api-status"
    assert found["status"] == 200
