"""tests/support's in-process service answers on either transport, and stops with the block."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from authz_service.health_probe import serving as grpc_serving
from devstack.probes import http_get
from tests.support.check_requests import check_request
from tests.support.issuers import hs256_token
from tests.support.servers import address_of, service_settings, serving

RUNTIME = {"revision": "s", "rbac": {"PLANT": {"customer": ["orders:read"]}}, "routes": {}}
CONTEXT = {"gateway_type": "PLANT", "route_id": "orders", "permission": "orders:read"}


async def test_the_grpc_transport_checks_and_stops(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, RUNTIME)
    async with serving(settings) as server:
        assert await asyncio.to_thread(grpc_serving, address_of(settings))
        async with grpc.aio.insecure_channel(address_of(settings)) as channel:
            checks = ext_grpc.AuthorizationStub(channel)
            allowed = await checks.Check(
                check_request(token=hs256_token(), context=CONTEXT), timeout=10
            )
            denied = await checks.Check(check_request(context=CONTEXT), timeout=10)
        assert allowed.HasField("ok_response")
        assert denied.denied_response.status.code == 401
    assert server.done()
    assert not await asyncio.to_thread(grpc_serving, address_of(settings))


async def test_the_http_transport_answers_health_and_stops(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, RUNTIME, transport="http")
    assert settings.grpc_address == ""
    health = f"http://{address_of(settings)}/health"
    async with serving(settings) as server:
        assert (await asyncio.to_thread(http_get, health))[0] == 200
    assert server.done()
    assert (await asyncio.to_thread(http_get, health))[0] == 0
