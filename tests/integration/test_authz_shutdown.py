"""SIGTERM: in-flight checks finish, every answered check is in the journal, the lock is freed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import grpc
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from authz_service.audit.framing import decode_record, read_frames
from authz_service.devtokens import sign_dev_token
from authz_service.server import serve
from authz_service.settings import Settings
from authz_service.shipper.journals import writer_gone

ISSUER, AUDIENCE, SECRET = "https://shutdown.test", "gateway", "shutdown-secret-0123456789abcdef"
GRACE_SECONDS = 20.0
CHECKS = 40


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
        audit_journal_dir=tmp_path / "journal",
        metrics_address="",
        admin_address="",
        shutdown_grace_seconds=GRACE_SECONDS,
    )


def _check_request(request_id: str) -> ext.CheckRequest:
    token = sign_dev_token(SECRET, ISSUER, AUDIENCE, "alice", ["customer"])
    headers = {"authorization": f"Bearer {token}", "x-request-id": request_id}
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


def _journaled(root: Path) -> list[str]:
    ids = []
    for segment in sorted(root.glob("*/*.journal")):
        frames = read_frames(segment.read_bytes(), 0)
        assert not frames.damage, "a clean stop leaves whole frames"
        assert not frames.incomplete, "and no frame cut short"
        ids += [decode_record(payload)["request_id"] for _, payload in frames.payloads]
    return ids


async def test_sigterm_answers_in_flight_checks_and_closes_the_journal(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    started = asyncio.Event()
    server = asyncio.create_task(serve(_settings(tmp_path, address), started))
    await asyncio.wait_for(started.wait(), 10)
    (journal,) = (tmp_path / "journal").iterdir()
    assert not writer_gone(journal), "the running service holds its journal's lock"
    before = [uuid.uuid4().hex for _ in range(CHECKS)]
    around = [uuid.uuid4().hex for _ in range(CHECKS)]
    async with grpc.aio.insecure_channel(address) as channel:
        checks = ext_grpc.AuthorizationStub(channel)
        for request_id in before:  # answered before the signal
            assert (await checks.Check(_check_request(request_id), timeout=10)).status.code == 0
        calls = [asyncio.ensure_future(checks.Check(_check_request(r), timeout=10)) for r in around]
        await asyncio.sleep(0.01)  # some of them reach the server
        stopped_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: graceful stop
        answers = await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.wait_for(server, GRACE_SECONDS + 10)
        took = time.monotonic() - stopped_at
    answered = before + [
        r for r, a in zip(around, answers, strict=True) if isinstance(a, ext.CheckResponse)
    ]
    assert took < GRACE_SECONDS / 2, f"shutdown took {took:.1f}s of a {GRACE_SECONDS}s grace"
    assert set(answered) <= set(_journaled(tmp_path / "journal")), "an answer without its record"
    assert writer_gone(journal), "the shipper may finish the journal now"
