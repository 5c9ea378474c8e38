"""A gRPC health probe (grpc.health.v1): `python -m devstack.grpc_health HOST:PORT [SERVICE]`.

Exit status 0 when the server answers SERVING, 1 otherwise; used by `make up` and by the
compose healthcheck of the authz service (the image has no grpc_health_probe binary).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when the gRPC server at `address` reports SERVING for `service` ("" = overall)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m devstack.grpc_health HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    ok = serving(argv[0], argv[1] if len(argv) == 2 else "", timeout=3.0)
    print("SERVING" if ok else "NOT SERVING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
