"""The whole service in-process with the real Redis and OPA: Check, health, outages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_service.devtokens import sign_dev_token
from authz_service.server import serve
from authz_service.settings import Settings
from devstack import OpaService, RedisService

ISSUER, AUDIENCE, SECRET = "https://it.test", "gateway", "integration-secret-0123456789abcdef"
RUNTIME = {
    "revision": "it",
    "rbac": {"PLANT": {"customer": ["reports:read"]}, "CP": {}, "PP": {}},
    "routes": {},
    "budgets": {"plans": {"standard": {"reports": {"day": 2}}, "trial": {"reports": {"day": 2}}}},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    stub: ext_grpc.AuthorizationStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture
async def running(
    tmp_path: Path, redis_service: RedisService, opa_service: OpaService
) -> AsyncIterator[Running]:
    runtime = tmp_path / "runtime.json"
    runtime.write_text(json.dumps(RUNTIME))
    address = f"127.0.0.1:{_free_port()}"
    settings = Settings(
        grpc_address=address,
        runtime_config=runtime,
        jwt_issuers=[
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["HS256"],
                "hs256_secret": SECRET,
            }
        ],
        opa_url=opa_service.url,
        redis_url=redis_service.url,
        audit_journal_dir=tmp_path / "journal",
        metrics_address="",
        admin_address="",
        policy_cache_seconds=0,
        health_interval_seconds=0.2,
        shutdown_grace_seconds=2,
    )
    started = asyncio.Event()
    task = asyncio.create_task(serve(settings, started))
    await asyncio.wait_for(started.wait(), 10)
    async with grpc.aio.insecure_channel(address) as channel:
        yield Running(ext_grpc.AuthorizationStub(channel), health_pb2_grpc.HealthStub(channel))
    os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: graceful stop
    await asyncio.wait_for(task, 10)


def _request(
    token: str, customer_route: str = "reports", paid_only: bool = False
) -> ext.CheckRequest:
    headers = {
        "authorization": f"Bearer {token}",
        "x-request-id": uuid.uuid4().hex,
        "x-correlation-id": "corr-it",
    }
    return ext.CheckRequest(
        attributes=ac.AttributeContext(
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(
                    method="GET", path="/api/v1/reports", headers=headers
                )
            ),
            context_extensions={
                "gateway_type": "PLANT",
                "route_id": customer_route,
                "permission": "reports:read",
                "policy": "gateway/authz",
                "paid_only": str(paid_only).lower(),
                "budget_metric": "reports",
                "budget_cost": "1",
            },
        )
    )


def _token(**claims: Any) -> str:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    return sign_dev_token(SECRET, ISSUER, AUDIENCE, "user-it", ["customer"], customer, **claims)


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


async def test_opa_outage_fails_closed_and_shows_in_health(
    running: Running, opa_service: OpaService
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    await asyncio.sleep(0.5)
    assert await _health(running, "") == serving
    assert await _health(running, "authz.opa") == serving
    assert await _health(running, "authz.redis") == serving
    assert await _health(running, "authz.audit") == serving
    opa_service.stop()
    try:
        status, body = _status(await running.stub.Check(_request(_token()), timeout=5))
        assert (status, body["code"], body["stage"]) == (503, "dependency_unavailable", "policy")
        await asyncio.sleep(0.6)
        assert await _health(running, "authz.opa") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        opa_service.start()
    status, _ = _status(await running.stub.Check(_request(_token()), timeout=5))
    assert status == 200
