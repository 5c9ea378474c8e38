"""Readiness and liveness probes: each answers quickly whether a service really serves requests
(readiness) or whether its process answers at all (liveness, whatever its dependencies)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import grpc
import psycopg
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.backoff import NoBackoff
from redis.retry import Retry


def http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET `url` (always a loopback address here); return (status, body), (0, "") when down
    or when what answers is not an HTTP/1 server (e.g. a gRPC port)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, ValueError, http.client.HTTPException):  # down, or not speaking HTTP/1
        return 0, ""


def redis_answers(host: str, port: int) -> bool:
    """PING succeeds (one try: a port held by something else must not stall the probe)."""
    client = redis.Redis(
        host=host,
        port=port,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def postgres_answers(conninfo: str) -> bool:
    """A real connection runs a query."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def grpc_health_answers(address: str, timeout: float = 1.0) -> bool:
    """grpc.health.v1 Check answers at all, SERVING or NOT_SERVING: the server's event loop
    runs (a NOT_SERVING dependency is readiness, not liveness)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """Any HTTP status at all (a 503 while a dependency is away is an answer)."""
    return http_get(url, timeout)[0] != 0
