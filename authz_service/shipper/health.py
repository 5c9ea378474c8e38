"""The shipper's HTTP endpoint: GET /health (JSON; 200 healthy, 503 not) and GET /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Status = Callable[[], dict[str, Any]]


async def start_health_server(address: str, status: Status) -> web.AppRunner:
    """Serve on host:port until the returned runner is cleaned up."""

    async def health(_: web.Request) -> web.Response:
        body = status()
        return web.json_response(body, status=200 if body["healthy"] else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"content-type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = address.rpartition(":")
    try:
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    except OSError as error:
        await runner.cleanup()
        raise OSError(
            f"AUTHZ_SHIPPER_HEALTH_ADDRESS: cannot listen on {address}: {error}"
        ) from error
    return runner
