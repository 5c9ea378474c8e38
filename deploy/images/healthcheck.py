"""Container healthcheck of the app image: GATEWAY_ROLE=authz (gRPC health), shipper or backend.

Standard library and grpcio only (both in the image), so it never imports a dev-only package.
Exit 0 when the process of that role answers healthy, 1 when not, 2 for an unknown role.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def _local(address: str) -> str:
    """A listening address as a local client reaches it (0.0.0.0:9001 -> 127.0.0.1:9001)."""
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"


def authz_serving() -> bool:
    import grpc  # noqa: PLC0415 - only this role needs it
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    address = _local(os.environ.get("AUTHZ_GRPC_ADDRESS", "127.0.0.1:9001"))
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:  # noqa: S310 - a loopback URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def backend_healthy() -> bool:
    return _http_ok(f"http://127.0.0.1:{os.environ.get('BACKEND_PORT', '8091')}/health")


def shipper_healthy() -> bool:
    """The audit shipper's /health: 200 while PostgreSQL takes its writes."""
    address = _local(os.environ.get("AUTHZ_SHIPPER_HEALTH_ADDRESS", "127.0.0.1:9465"))
    return _http_ok(f"http://{address}/health")


def main() -> int:
    role = os.environ.get("GATEWAY_ROLE", "authz")
    checks = {"authz": authz_serving, "shipper": shipper_healthy, "backend": backend_healthy}
    if role not in checks:
        print(f"healthcheck: unknown GATEWAY_ROLE {role!r} (known: {', '.join(checks)})")
        return 2
    healthy = checks[role]()
    print(f"{role}: {'healthy' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
