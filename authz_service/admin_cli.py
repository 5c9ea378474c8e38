"""`python -m authz_service explain|budget|reload`: the admin API from a terminal, readable."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]

from authz_service._proto.gateway.admin.v1 import admin_pb2 as pb
from authz_service._proto.gateway.admin.v1 import admin_pb2_grpc as pb_grpc

COMMANDS = ("explain", "budget", "reload")
_MARKS = {"allow": "✓", "deny": "✗", "shadow_deny": "~", "skip": "-", "fail_open": "!"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m authz_service")
    parser.add_argument(
        "--admin-address",
        default=os.environ.get("AUTHZ_ADMIN_ADDRESS") or "127.0.0.1:9002",
        help="host:port of the admin API (default: $AUTHZ_ADMIN_ADDRESS or 127.0.0.1:9002)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="trace every stage for a request")
    credential = explain.add_mutually_exclusive_group(required=True)
    credential.add_argument("--token", help="a bearer token")
    credential.add_argument("--claims", help="raw claims as JSON (AUTHZ_ADMIN_DEV_CLAIMS only)")
    explain.add_argument("--gateway-type", default="PLANT", choices=["PLANT", "CP", "PP"])
    explain.add_argument("--header", action="append", default=[], help="name=value, repeatable")
    explain.add_argument("--json", action="store_true", help="print the response as JSON")
    explain.add_argument("method")
    explain.add_argument("path")
    budget = commands.add_parser("budget", help="usage and remaining budget of a subject")
    budget.add_argument("--plan", default="", help="the subject's plan (default: standard)")
    budget.add_argument(
        "subject", help="customer:<customer id>, or user:<user id> for users without a customer"
    )
    commands.add_parser("reload", help="re-read runtime.json and the policies")
    return parser


def format_trace(reply: pb.ExplainResponse) -> str:
    verdict = "ALLOWED" if reply.allowed else "DENIED"
    lines = [
        f"{verdict} {reply.status}  route={reply.route_id or '(none)'}",
        f"config {reply.config_revision[:12]}  policy {reply.policy_revision[:12]}",
    ]
    for step in reply.stages:
        code = f" [{step.code}]" if step.code else ""
        lines.append(f"  {_MARKS.get(step.outcome, '?')} {step.stage:<12} {step.outcome}{code}")
        if step.detail:
            lines.append(f"      {step.detail}")
        data: dict[str, Any] = json_format.MessageToDict(step.data)
        for key, value in data.items():
            lines.append(f"      {key}: {json.dumps(value, sort_keys=True)}")
    return "\n".join(lines)


def _explain(stub: pb_grpc.GatewayAdminStub, args: argparse.Namespace) -> str:
    request = pb.ExplainRequest(
        gateway_type=args.gateway_type,
        method=args.method,
        path=args.path,
        headers=dict(h.split("=", 1) for h in args.header if "=" in h),
    )
    if args.token:
        request.token = args.token
    else:
        json_format.ParseDict(json.loads(args.claims), request.claims)
    reply = stub.Explain(request, timeout=args.timeout)
    return json_format.MessageToJson(reply) if args.json else format_trace(reply)


def _budget(stub: pb_grpc.GatewayAdminStub, args: argparse.Namespace) -> str:
    reply = stub.Budget(
        pb.BudgetRequest(subject=args.subject, plan=args.plan), timeout=args.timeout
    )
    if not reply.windows:
        return f"{args.subject}: no limited metric"
    return "\n".join(
        f"{w.metric:<16} {w.window:<6} used {w.used}/{w.limit}  remaining {w.remaining}"
        f"  resets in {w.resets_in_seconds}s"
        for w in reply.windows
    )


def _reload(stub: pb_grpc.GatewayAdminStub, args: argparse.Namespace) -> tuple[str, bool]:
    reply = stub.Reload(pb.ReloadRequest(), timeout=args.timeout)
    state = "applied" if reply.applied else f"rejected: {reply.error}"
    text = f"reload {state}\nconfig {reply.config_revision}\npolicy {reply.policy_revision}"
    return text, bool(reply.applied)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    with grpc.insecure_channel(args.admin_address) as channel:
        stub = pb_grpc.GatewayAdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            if args.command == "explain":
                print(_explain(stub, args))
            elif args.command == "budget":
                print(_budget(stub, args))
            else:
                text, applied = _reload(stub, args)
                print(text)
                return 0 if applied else 1
        except grpc.RpcError as exc:
            print(
                f"authz_service {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr
            )
            return 2
    return 0
