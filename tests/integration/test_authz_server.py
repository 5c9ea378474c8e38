"""The whole service in-process with the real Redis and OPA: Check, health, outages."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import OpaService, RedisService
from tests.support import servers
from tests.support.check_requests import check_request
from tests.support.issuers import hs256_token
from tests.support.servers import service_settings
from tests.support.waiting import eventually_async

RUNTIME = {
    "revision": "it",
    "rbac": {"PLANT": {"customer": ["reports:read"]}, "CP": {}, "PP": {}},
    "routes": {},
    "budgets": {"plans": {"standard": {"reports": {"day": 2}}, "trial": {"reports": {"day": 2}}}},
}


@dataclass
class Running:
    stub: ext_grpc.AuthorizationStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture
async def running(
    tmp_path: Path, redis_service: RedisService, opa_service: OpaService
) -> AsyncIterator[Running]:
    settings = service_settings(
        tmp_path,
        RUNTIME,
        opa_url=opa_service.url,
        redis_url=redis_service.url,
        policy_cache_seconds=0,
        health_interval_seconds=0.2,
        shutdown_grace_seconds=2,
    )
    async with (
        servers.serving(settings),
        grpc.aio.insecure_channel(settings.grpc_address) as channel,
    ):
        yield Running(ext_grpc.AuthorizationStub(channel), health_pb2_grpc.HealthStub(channel))


def _request(
    token: str, customer_route: str = "reports", paid_only: bool = False
) -> ext.CheckRequest:
    return check_request(
        path="/api/v1/reports",
        token=token,
        headers={"x-request-id": uuid.uuid4().hex, "x-correlation-id": "corr-it"},
        context={
            "gateway_type": "PLANT",
            "route_id": customer_route,
            "permission": "reports:read",
            "policy": "gateway/authz",
            "paid_only": str(paid_only).lower(),
            "budget_metric": "reports",
            "budget_cost": "1",
        },
    )


def _token(**claims: Any) -> str:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    return hs256_token("user-it", ["customer"], customer, **claims)


def _status(response: ext.CheckResponse) -> tuple[int, dict[str, Any]]:
    if response.HasField("ok_response"):
        return 200, {h.header.key: h.header.value for h in response.ok_response.headers}
    return response.denied_response.status.code, json.loads(response.denied_response.body)


async def test_check_with_real_opa_and_redis(running: Running) -> None:
    token = _token()
    first = _status(await running.stub.Check(_request(token), timeout=5))
    second = _status(await running.stub.Check(_request(token), timeout=5))
    third = _status(await running.stub.Check(_request(token), timeout=5))
    assert (first[0], first[1]["x-budget-remaining"]) == (200, "1")
    assert (second[0], second[1]["x-budget-remaining"]) == (200, "0")
    assert (third[0], third[1]["code"], third[1]["budget"]["used"]) == (402, "budget_exceeded", 2)
    expired = _token(plan="trial", trial_mode=True, trial_ends_at=int(time.time()) - 10)
    assert (
        _status(await running.stub.Check(_request(expired), timeout=5))[1]["code"]
        == "trial_expired"
    )
    trial = _token(plan="trial", trial_mode=True, trial_ends_at=int(time.time()) + 600)
    paid = _status(await running.stub.Check(_request(trial, paid_only=True), timeout=5))
    assert (paid[0], paid[1]["code"]) == (403, "paid_only")


async def _health(running: Running, service: str) -> int:
    reply = await running.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(reply.status)


async def _is(running: Running, service: str, status: int) -> bool:
    return await _health(running, service) == status


async def test_opa_outage_fails_closed_and_shows_in_health(
    running: Running, opa_service: OpaService
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    await eventually_async(lambda: _is(running, "", serving), 10, what="the first health round")
    assert await _health(running, "") == serving
    assert await _health(running, "authz.opa") == serving
    assert await _health(running, "authz.redis") == serving
    assert await _health(running, "authz.audit") == serving
    opa_service.stop()
    try:
        status, body = _status(await running.stub.Check(_request(_token()), timeout=5))
        assert (status, body["code"], body["stage"]) == (503, "dependency_unavailable", "policy")
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await eventually_async(lambda: _is(running, "authz.opa", not_serving), 10,
                               what="authz.opa NOT_SERVING")  # fmt: skip
        assert await _health(running, "authz.opa") == not_serving
    finally:
        opa_service.start()
    status, _ = _status(await running.stub.Check(_request(_token()), timeout=5))
    assert status == 200
