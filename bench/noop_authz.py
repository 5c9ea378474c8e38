"""Calibration: a bare grpc.aio Check that always allows (`python -m bench.noop_authz ADDRESS`).

The cost of Python + grpc.aio + Envoy's ext_authz with no pipeline at all: the ceiling any
Python ext_authz service can reach on this machine, measured beside the real one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
import uvloop
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3.external_auth_pb2_grpc import (
    AuthorizationServicer,
    add_AuthorizationServicer_to_server,
)
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc

_ALLOW = ext.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AllowAll(AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: Any, context: Any) -> ext.CheckResponse:  # noqa: N802
        return _ALLOW


async def serve(address: str) -> None:
    server = grpc.aio.server()
    add_AuthorizationServicer_to_server(AllowAll(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))
