"""CPU per Check inside the service, no gRPC and no Envoy (`python -m bench.pipeline_cost`).

The real servicer, pipeline, token verifier and regopy engine on the bench's rendered route,
called in a loop with the bench's 50 principals. Budgets use the in-process ledger. With
`--journal none` the audit records are dropped, so the figure is the Python the request path
itself runs; `--journal off|batch` writes them to a real journal (fsync off, or fdatasync per
batch) in a temporary directory: the difference is the journal's CPU per check. `--concurrency
N` keeps N checks in flight (group commit: one write per loop turn for all of them).
`--transport http` sends the same checks as Envoy's http_service does, as bytes into the
HTTP server's connection Protocol (a transport that only collects the answers): the HTTP
transport's parser, connection and wire format included. `--profile` prints cProfile's top
functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import uvloop
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext

from authz_service.audit.journal import Journal
from authz_service.health import HealthBoard
from authz_service.http_connection import HttpConnection, HttpLimits
from authz_service.http_server import HttpCheckServer
from authz_service.server import GC_THRESHOLDS
from authz_service.servicer import AuthorizationService
from authz_service.settings import Settings
from authz_service.wiring import build_components
from bench.keys import AUDIENCE, ISSUER, new_issuer
from bench.processes import REPO, render
from bench.stack import PATH, ROUTE_ID, TOKENS
from gateway_contract.headers import ROUTE_FACTS_HEADER
from gateway_contract.route_facts import RouteFacts


class _DroppingJournal:
    """The journal seam with nothing behind it: the request path's own cost."""

    accepting = True

    def record(self, row: dict[str, Any], *, refusal: bool = False) -> Awaitable[None] | None:
        del row, refusal
        return None


def _requests(tokens: list[str], facts: RouteFacts, count: int) -> list[ext.CheckRequest]:
    context = facts.to_context_extensions()
    requests = []
    for i in range(count):
        headers = {
            "authorization": f"Bearer {tokens[i % len(tokens)]}",
            "x-request-id": f"req-{i}",
            "x-correlation-id": "0b5d1f1c-2d7e-4c1b-9f3a-8a6b2c1d0e9f",
            "user-agent": "bench",
            "x-client-ip": "127.0.0.1",
        }
        http = ac.AttributeContext.HttpRequest(method="GET", path=PATH, headers=headers)
        attributes = ac.AttributeContext(
            request=ac.AttributeContext.Request(http=http), context_extensions=context
        )
        requests.append(ext.CheckRequest(attributes=attributes))
    return requests


class _Collecting(asyncio.Transport):
    """A connection's transport that keeps the answers and says when enough have come."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[bytes] = []
        self.wanted = 0
        self.done = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.answers.append(bytes(data))
        if len(self.answers) >= self.wanted:
            self.done.set()

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _http_requests(tokens: list[str], facts: RouteFacts, count: int) -> list[bytes]:
    metadata = facts.to_route_metadata()
    return [
        (
            f"GET /check{PATH} HTTP/1.1\r\nhost: authz\r\ncontent-length: 0\r\n"
            f"x-request-id: req-{i}\r\n"
            "x-correlation-id: 0b5d1f1c-2d7e-4c1b-9f3a-8a6b2c1d0e9f\r\n"
            f"authorization: Bearer {tokens[i % len(tokens)]}\r\nuser-agent: bench\r\n"
            f"x-client-ip: 127.0.0.1\r\n{ROUTE_FACTS_HEADER}: {metadata}\r\n"
            "x-authz-peer: 127.0.0.1\r\nx-envoy-expected-rq-timeout-ms: 1000\r\n\r\n"
        ).encode()
        for i in range(count)
    ]


async def _run_http(server: HttpCheckServer, requests: list[bytes], concurrency: int) -> None:
    """`concurrency` connections, one check in flight on each (Envoy's HTTP/1.1 pool)."""
    pairs = []
    for _ in range(concurrency):
        transport = _Collecting()
        connection = HttpConnection(server)
        connection.connection_made(transport)
        pairs.append((connection, transport))
    for start in range(0, len(requests), concurrency):
        chunk = requests[start : start + concurrency]
        for (connection, transport), request in zip(pairs, chunk, strict=False):
            transport.answers.clear()
            transport.wanted = 1
            transport.done.clear()
            connection.data_received(request)
        for _, transport in pairs[: len(chunk)]:
            await transport.done.wait()
            if not transport.answers[0].startswith(b"HTTP/1.1 200 "):
                raise SystemExit("pipeline_cost: the bench route refused a valid token")
    for connection, _ in pairs:
        connection.connection_lost(None)


async def _run(service: AuthorizationService, requests: list[Any], concurrency: int) -> None:
    for start in range(0, len(requests), concurrency):
        chunk = requests[start : start + concurrency]
        answers = await asyncio.gather(*(service.Check(r, None) for r in chunk))
        if any(answer.status.code != 0 for answer in answers):
            raise SystemExit("pipeline_cost: the bench route refused a valid token")


async def measure(
    checks: int, profile: bool, journal: str = "none", concurrency: int = 1, transport: str = "grpc"
) -> float:
    """CPU microseconds per Check over `checks` calls, after as many again to warm up."""
    issuer = new_issuer()
    trusted = {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"]}
    with tempfile.TemporaryDirectory(prefix="pipeline-cost-") as work:
        render_dir, runtime = render(Path(work))
        os.environ.update(
            AUTHZ_JWT_ISSUERS=json.dumps([{**trusted, "jwks": issuer.jwks}]),
            AUTHZ_RUNTIME_CONFIG=str(render_dir / "authz" / "runtime.json"),
            AUTHZ_POLICY_DIR=str(REPO / "policies"),
            AUTHZ_REDIS_URL="",
        )
        components = build_components(Settings())  # reads the runtime config now
        gc.set_threshold(*GC_THRESHOLDS)  # as the serving process sets it
        sink: Any = _DroppingJournal()
        if journal != "none":
            fsync: Any = journal
            sink = Journal(Path(work) / "journal", fsync=fsync, max_bytes=1 << 40)
            await sink.open()
        service = AuthorizationService(components.pipeline, sink, timeout_seconds=1.0)
        route = runtime["routes"][ROUTE_ID]
        facts = RouteFacts(
            gateway_type="PLANT", route_id=ROUTE_ID, permission=route["permission"],
            policy=route["policy"], paid_only=False, budget_metric=route["budget"]["metric"],
            budget_cost=route["budget"]["cost"], config_revision=runtime["revision"], shadow=(),
        )  # fmt: skip
        tokens = [issuer.token(user) for user in range(TOKENS)]
        if transport == "http":
            server = HttpCheckServer(service.checker, HealthBoard(), "127.0.0.1:0", HttpLimits())
            raw = _http_requests(tokens, facts, 2 * checks)
            await _run_http(server, raw[:checks], concurrency)
            loop: Any = lambda: _run_http(server, raw[checks:], concurrency)  # noqa: E731
        else:
            requests = _requests(tokens, facts, 2 * checks)
            await _run(service, requests[:checks], concurrency)
            loop = lambda: _run(service, requests[checks:], concurrency)  # noqa: E731
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()  # every thread of the process: fdatasync's too
        if profiler is not None:
            profiler.enable()
        await loop()
        if profiler is not None:
            profiler.disable()
        spent = time.process_time() - started
        if isinstance(sink, Journal):
            await sink.close()
        await components.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return spent / checks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cost", description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    parser.add_argument(
        "--journal", choices=["none", "off", "batch"], default="none",
        help="none: records dropped; off|batch: a real journal (AUTHZ_AUDIT_FSYNC)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=1, help="checks in flight at once")
    parser.add_argument(
        "--transport", choices=["grpc", "http"], default="grpc",
        help="grpc: the servicer's Check; http: request bytes into the HTTP connection",
    )  # fmt: skip
    args = parser.parse_args()
    per_check = uvloop.run(
        measure(args.checks, args.profile, args.journal, args.concurrency, args.transport)
    )
    print(f"{per_check:.1f} µs CPU per Check in-process ({args.checks} checks, journal "
          f"{args.journal}, {args.concurrency} in flight, {args.transport})")  # fmt: skip


if __name__ == "__main__":
    main()
