"""The authz service on its in-process fallbacks, through the real Envoys: embedded Rego
(regopy), the in-process budget ledger, and the audit journal on disk with no PostgreSQL and
no shipper. Every other e2e stack runs on the real OPA, Redis and PostgreSQL; this one runs
what a single-instance development setup without them gets (`make up` without the programs).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e._audit_stack import journal_records
from tests.e2e._gateway_stack import GatewayStack, Reply, StackOptions, shipper_health

pytestmark = pytest.mark.fallbacks
PROBLEM_BASE = "https://gateway.example/problems/"


@pytest.fixture(scope="module")
def gateway_stack_options() -> StackOptions:
    tight = {"budgets": {"overrides": {"customers": {"cust-tight": {"api_calls": {"day": 2}}}}}}
    return StackOptions(fallbacks=True, config_overrides=tight)


def _problem(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body[:300]
    assert reply.content_type == "application/problem+json"
    assert reply.json()["type"] == PROBLEM_BASE + code


def test_the_authz_service_runs_with_no_opa_redis_or_shipper(gateway_stack: GatewayStack) -> None:
    authz = gateway_stack.part("authz")
    environ = Path(f"/proc/{authz.pid}/environ").read_bytes().split(b"\0")
    assert b"AUTHZ_OPA_URL=" in environ
    assert b"AUTHZ_REDIS_URL=" in environ
    assert "shipper" not in gateway_stack.spec.components
    assert shipper_health(gateway_stack) == (0, {})  # nothing listens on the shipper's port


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
def test_no_token_is_401_everywhere(gateway_stack: GatewayStack, entry: str) -> None:
    _problem(gateway_stack.request(entry, "GET", "/api/v1/orders"), 401, "token_missing")


def test_a_customer_reaches_the_backend_through_cp(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(sub="user-fb", customer_id="cust-fb")
    reply = gateway_stack.request("cp", "GET", "/api/v1/orders", token=token)
    assert reply.status == 200, reply.body[:300]
    seen = {k.lower(): v for k, v in reply.json()["headers"].items()}
    assert (seen["x-user-id"], seen["x-customer-id"]) == ("user-fb", "cust-fb")


def test_the_embedded_policy_refuses_an_ended_trial(gateway_stack: GatewayStack) -> None:
    ended = int(time.time()) - 60
    token = gateway_stack.sign_token(plan="trial", trial_mode=True, trial_ends_at=ended)
    reply = gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}")
    _problem(reply, 403, "trial_expired")


def test_the_in_process_ledger_answers_402_when_the_budget_is_spent(
    gateway_stack: GatewayStack,
) -> None:
    token = gateway_stack.sign_token(sub="tight-user", customer_id="cust-tight")
    remaining = []
    for _ in range(2):
        reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
        assert reply.status == 200
        remaining.append({k.lower(): v for k, v in reply.json()["headers"].items()}
                         ["x-budget-remaining"])  # fmt: skip
    assert remaining == ["1", "0"]
    reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
    _problem(reply, 402, "budget_exceeded")
    assert int(reply.headers["retry-after"]) > 0


def test_decisions_stay_in_the_journal_on_disk(gateway_stack: GatewayStack) -> None:
    """No shipper takes them away: the journal holds every decision of this module."""
    before = journal_records(gateway_stack, "deny")
    _problem(gateway_stack.request("plant", "GET", "/api/v1/orders"), 401, "token_missing")
    assert journal_records(gateway_stack, "deny") == before + 1
