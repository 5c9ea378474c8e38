"""Through the real Envoys with the real OPA and Redis: budgets in Redis, 503 when OPA stops."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from authz_service import health_probe
from devstack import OpaService
from devstack.probes import http_get
from tests.e2e._gateway_stack import GatewayStack, StackOptions
from tests.support.waiting import eventually

HEALTH_WITHIN_S = 15.0


def _component_serving(stack: GatewayStack, transport: str, component: str) -> bool:
    """The authz service's readiness of one component, on the stack's transport."""
    assert stack.launched is not None
    address = stack.launched.authz_address()
    if transport == "http":
        return http_get(f"http://{address}/health/{component}")[0] == 200
    return health_probe.serving(address, component)


def _alive_while_not_ready(stack: GatewayStack, transport: str, component: str) -> None:
    """make up's liveness probe passes while `component` is NOT_SERVING: a dependency that is
    away must never get the authz service restarted (a restart adopts a new budget ledger)."""
    eventually(lambda: not _component_serving(stack, transport, component), HEALTH_WITHIN_S,
               what=f"{component} NOT_SERVING")  # fmt: skip
    assert stack.part("authz").alive(), f"authz judged dead while {component} is away"


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]], authz_transport: str
) -> StackOptions:
    """The real OPA and Redis of every stack; no policy cache, so OPA's stop shows at once."""
    stack_options, _ = gateway_stack_types
    return stack_options(
        authz_env={"AUTHZ_POLICY_CACHE_SECONDS": "0"},
        config_overrides={
            # one customer per transport: both runs share the session's Redis
            "budgets": {
                "overrides": {
                    "customers": {f"cust-redis-{authz_transport}": {"api_calls": {"day": 3}}}
                }
            }
        },
    )


def test_budget_in_redis_is_402_when_used_up(
    gateway_stack: GatewayStack, authz_transport: str
) -> None:
    customer = f"cust-redis-{authz_transport}"
    token = gateway_stack.sign_token(sub=f"u-{uuid.uuid4().hex[:6]}", customer_id=customer)
    remaining = []
    for _ in range(3):
        reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
        assert reply.status == 200
        seen = {k.lower(): v for k, v in reply.json()["headers"].items()}
        remaining.append(seen["x-budget-remaining"])
    assert remaining == ["2", "1", "0"]
    reply = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
    assert reply.status == 402
    assert reply.content_type == "application/problem+json"
    assert reply.json()["code"] == "budget_exceeded"
    assert int(reply.headers["retry-after"]) > 0


def test_trial_expiry_decided_by_opa(gateway_stack: GatewayStack) -> None:
    token = gateway_stack.sign_token(
        plan="trial", trial_mode=True, trial_ends_at=int(time.time()) - 1
    )
    reply = gateway_stack.request(
        "pp",
        "POST",
        "/api/v1/orders",
        token=gateway_stack.sign_token(
            roles=("admin",), plan="trial", trial_mode=True, trial_ends_at=int(time.time()) - 1
        ),
    )
    assert (reply.status, reply.json()["code"]) == (403, "trial_expired")
    reply = gateway_stack.request("plant", "POST", "/api/v1/orders", token=token, body=b"{}")
    assert (reply.status, reply.json()["code"]) == (403, "trial_expired")


def test_opa_stopped_is_503_problem(
    gateway_stack: GatewayStack, opa_service: OpaService, authz_transport: str
) -> None:
    token = gateway_stack.sign_token()
    assert (
        gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}").status == 200
    )
    opa_service.stop()
    try:
        reply = gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}")
        assert reply.status == 503
        assert reply.content_type == "application/problem+json"
        body = reply.json()
        assert (body["code"], body["stage"]) == ("dependency_unavailable", "policy")
        assert "resource" not in body
        # a route without a policy does not need OPA
        assert gateway_stack.request("cp", "GET", "/api/v1/orders", token=token).status == 200
        _alive_while_not_ready(gateway_stack, authz_transport, "authz.opa")
    finally:
        opa_service.start()
    reply = gateway_stack.request("cp", "POST", "/api/v1/orders", token=token, body=b"{}")
    assert reply.status == 200


def test_redis_that_lost_its_counters_is_503_not_a_fresh_budget(
    gateway_stack: GatewayStack, authz_transport: str
) -> None:
    """Faults pass 2026-11-30: FLUSHALL gave an exhausted customer a whole budget again."""
    redis_url = gateway_stack.spec.datastores.redis_url
    assert redis_url, "this module's stack runs on the real Redis"
    customer = f"cust-redis-{authz_transport}"  # exhausted by the test above, or now
    token = gateway_stack.sign_token(sub=f"u-{uuid.uuid4().hex[:6]}", customer_id=customer)
    for _ in range(4):
        last = gateway_stack.request("plant", "GET", "/api/v1/orders", token=token)
    assert last.status == 402
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()  # this stack's own database (SessionDatastores.lease)
    for entry in ("plant", "cp"):
        reply = gateway_stack.request(entry, "GET", "/api/v1/orders", token=token)
        assert reply.status == 503, (entry, reply.status, reply.body)
        assert reply.content_type == "application/problem+json"
        body = reply.json()
        assert (body["code"], body["stage"]) == ("dependency_unavailable", "budget")
    # a route without a budget is not held hostage by the ledger
    assert gateway_stack.request("cp", "GET", "/api/v1/me", token=token).status == 200
    _alive_while_not_ready(gateway_stack, authz_transport, "authz.redis")
