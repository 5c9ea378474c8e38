"""SIGTERM: in-flight checks finish, every answered check is in the journal, the lock is freed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from authz_service.audit.framing import decode_record, read_frames
from authz_service.shipper.journals import writer_gone
from tests.support import servers
from tests.support.check_requests import check_request
from tests.support.issuers import hs256_token
from tests.support.servers import service_settings
from tests.support.waiting import eventually_async

RUNTIME = {"revision": "t", "rbac": {"PLANT": {"customer": ["orders:read"]}}, "routes": {}}
GRACE_SECONDS = 20.0
CHECKS = 40


def _check_request(request_id: str) -> ext.CheckRequest:
    return check_request(
        token=hs256_token("alice", customer_id=None),
        headers={"x-request-id": request_id},
        context={"gateway_type": "PLANT", "route_id": "orders", "permission": "orders:read"},
    )


async def _answered(calls: list[asyncio.Future[ext.CheckResponse]]) -> bool:
    return any(call.done() for call in calls)


def _journaled(root: Path) -> list[str]:
    ids = []
    for segment in sorted(root.glob("*/*.journal")):
        frames = read_frames(segment.read_bytes(), 0)
        assert not frames.damage, "a clean stop leaves whole frames"
        assert not frames.incomplete, "and no frame cut short"
        ids += [decode_record(payload)["request_id"] for _, payload in frames.payloads]
    return ids


async def test_sigterm_answers_in_flight_checks_and_closes_the_journal(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, RUNTIME, shutdown_grace_seconds=GRACE_SECONDS)
    address = settings.grpc_address
    async with servers.serving(settings) as server:
        (journal,) = (tmp_path / "journal").iterdir()
        assert not writer_gone(journal), "the running service holds its journal's lock"
        before = [uuid.uuid4().hex for _ in range(CHECKS)]
        around = [uuid.uuid4().hex for _ in range(CHECKS)]
        async with grpc.aio.insecure_channel(address) as channel:
            checks = ext_grpc.AuthorizationStub(channel)
            for request_id in before:  # answered before the signal
                assert (await checks.Check(_check_request(request_id), timeout=10)).status.code == 0
            calls = [
                asyncio.ensure_future(checks.Check(_check_request(r), timeout=10)) for r in around
            ]
            # the signal comes while checks are in flight: the first answer says they arrived
            await eventually_async(lambda: _answered(calls), 10, what="a first answer")
            stopped_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: graceful stop
            answers = await asyncio.gather(*calls, return_exceptions=True)
            await asyncio.wait_for(server, GRACE_SECONDS + 10)
            took = time.monotonic() - stopped_at
        answered = before + [
            r for r, a in zip(around, answers, strict=True) if isinstance(a, ext.CheckResponse)
        ]
        assert took < GRACE_SECONDS / 2, f"shutdown took {took:.1f}s of a {GRACE_SECONDS}s grace"
        assert set(answered) <= set(_journaled(tmp_path / "journal")), (
            "an answer without its record"
        )
        assert writer_gone(journal), "the shipper may finish the journal now"
