"""SIGTERM: in-flight checks finish, and an open access-log stream does not hold shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from authz_service.devtokens import sign_dev_token
from authz_service.server import serve
from authz_service.settings import Settings

ISSUER, AUDIENCE, SECRET = "https://shutdown.test", "gateway", "shutdown-secret-0123456789abcdef"
GRACE_SECONDS = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(tmp_path: Path, address: str) -> Settings:
    runtime = tmp_path / "runtime.json"
    runtime.write_text(
        json.dumps(
            {"revision": "t", "rbac": {"PLANT": {"customer": ["orders:read"]}}, "routes": {}}
        )
    )
    issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["HS256"]}
    return Settings(
        grpc_address=address,
        runtime_config=runtime,
        jwt_issuers=[{**issuer, "hs256_secret": SECRET}],
        audit_spool_dir=tmp_path / "spool",
        metrics_address="",
        admin_address="",
        shutdown_grace_seconds=GRACE_SECONDS,
    )


def _check_request() -> ext.CheckRequest:
    token = sign_dev_token(SECRET, ISSUER, AUDIENCE, "alice", ["customer"])
    headers = {"authorization": f"Bearer {token}", "x-request-id": uuid.uuid4().hex}
    http = ac.AttributeContext.HttpRequest(method="GET", path="/api/v1/orders", headers=headers)
    return ext.CheckRequest(
        attributes=ac.AttributeContext(
            request=ac.AttributeContext.Request(http=http),
            context_extensions={
                "gateway_type": "PLANT",
                "route_id": "orders",
                "permission": "orders:read",
            },
        )
    )


async def _access_log_stream() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
    """Like Envoy: one entry, then the stream stays open for good."""
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = uuid.uuid4().hex
    entry.response.response_code.value = 200
    yield als_pb2.StreamAccessLogsMessage(
        identifier=als_pb2.StreamAccessLogsMessage.Identifier(
            node=base_pb2.Node(id="test"), log_name="PLANT"
        ),
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry]),
    )
    await asyncio.Event().wait()


async def test_sigterm_does_not_wait_the_grace_for_open_access_log_streams(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{_free_port()}"
    started = asyncio.Event()
    server = asyncio.create_task(serve(_settings(tmp_path, address), started))
    await asyncio.wait_for(started.wait(), 10)
    async with grpc.aio.insecure_channel(address) as channel:
        checks = ext_grpc.AuthorizationStub(channel)
        assert (await checks.Check(_check_request(), timeout=5)).status.code == 0
        logs = als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(_access_log_stream())
        await asyncio.sleep(0.2)  # the stream is open on the server
        stopped_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: graceful stop
        await asyncio.wait_for(server, GRACE_SECONDS + 10)
        took = time.monotonic() - stopped_at
        logs.cancel()
    # Waiting for the access-log stream would take the whole grace: it never ends by itself.
    assert took < GRACE_SECONDS / 2, f"shutdown took {took:.1f}s of a {GRACE_SECONDS}s grace"
    spooled = "".join(p.read_text() for p in (tmp_path / "spool").glob("*"))
    assert spooled.count('"request_id"') >= 2, "the decision and its completion were spooled"
