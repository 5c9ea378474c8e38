"""CPU per Check inside the service, no gRPC and no Envoy (`python -m bench.pipeline_cost`).

The real servicer, pipeline, token verifier and regopy engine on the bench's rendered route,
called in a loop with the bench's 50 principals. Budgets use the in-process ledger and the
audit sink drops records, so the figure is the Python the request path itself runs: the part
a code change moves. `--profile` prints cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import uvloop
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext

from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.servicer import AuthorizationService
from authz_service.settings import Settings
from authz_service.wiring import build_components
from bench.keys import AUDIENCE, ISSUER, new_issuer
from bench.processes import REPO, render
from bench.stack import PATH, ROUTE_ID, TOKENS


class _DroppingSink:
    accepting = True

    def submit(self, record: AuditRecord) -> None:
        del record

    def complete(self, completion: AccessLogCompletion) -> None:
        del completion


def _requests(tokens: list[str], context: dict[str, str], count: int) -> list[ext.CheckRequest]:
    requests = []
    for i in range(count):
        headers = {
            "authorization": f"Bearer {tokens[i % len(tokens)]}",
            "x-request-id": f"req-{i}",
            "x-correlation-id": "0b5d1f1c-2d7e-4c1b-9f3a-8a6b2c1d0e9f",
            "user-agent": "bench",
            "x-forwarded-for": "127.0.0.1",
        }
        http = ac.AttributeContext.HttpRequest(method="GET", path=PATH, headers=headers)
        attributes = ac.AttributeContext(
            request=ac.AttributeContext.Request(http=http), context_extensions=context
        )
        requests.append(ext.CheckRequest(attributes=attributes))
    return requests


async def measure(checks: int, profile: bool) -> float:
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
    service = AuthorizationService(components.pipeline, _DroppingSink(), timeout_seconds=1.0)
    route = runtime["routes"][ROUTE_ID]
    context = {
        "gateway_type": "PLANT", "route_id": ROUTE_ID, "permission": route["permission"],
        "policy": route["policy"], "paid_only": "false",
        "budget_metric": route["budget"]["metric"], "budget_cost": str(route["budget"]["cost"]),
        "config_revision": runtime["revision"], "shadow": "",
    }  # fmt: skip
    tokens = [issuer.token(user) for user in range(TOKENS)]
    requests = _requests(tokens, context, 2 * checks)
    for request in requests[:checks]:
        response = await service.Check(request, None)
        if response.status.code != 0:
            raise SystemExit(f"pipeline_cost: the bench route refused a valid token: {response}")
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    for request in requests[checks:]:
        await service.Check(request, None)
    if profiler is not None:
        profiler.disable()
    spent = time.process_time() - started
    await components.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return spent / checks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cost", description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    args = parser.parse_args()
    per_check = uvloop.run(measure(args.checks, args.profile))
    print(f"{per_check:.1f} µs CPU per Check in-process ({args.checks} checks)")


if __name__ == "__main__":
    main()
