"""`python -m authz_service health`: asks a running service's grpc.health.v1 whether it serves.

The container healthcheck of the authz service (the image has no grpc_health_probe binary),
and the readiness probe of `make up` and the benchmarks. Exit status 0 when every service
named answers SERVING, 1 otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:9001"


def serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when the gRPC server at `address` reports SERVING for `service` ("" = overall)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m authz_service health",
        description="Exit 0 when every SERVICE answers SERVING on grpc.health.v1, else 1.",
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="host:port of the service")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per service")
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help='health service names, e.g. authz.redis (default: "", the server overall)',
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    ok = True
    for service in args.services or [""]:
        up = serving(args.address, service, timeout=args.timeout)
        print(f"{service or 'overall'}: {'SERVING' if up else 'NOT SERVING'}")
        ok = ok and up
    return 0 if ok else 1
