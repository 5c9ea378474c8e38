"""The backend's aiohttp app: /health, /livez and the /api/v1 routes of config/gateway.yaml."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

DEFAULT_MAX_BODY = 1_048_576  # 1 MiB, as the gateway's default limit
UPLOAD_MAX_BODY = 16 * 1_048_576  # only /api/v1/uploads takes more
MAX_SLOW_MS = 30_000
DB_KEY = web.AppKey("database_url", str)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)


async def _echo(request: web.Request, resource: str, **extra: Any) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "resource": resource,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body_bytes": len(body),
            **extra,
        }
    )


async def livez(_: web.Request) -> web.Response:
    """Liveness: answered by the event loop itself, never asking the database."""
    return web.Response(text="live\n")


async def health(request: web.Request) -> web.Response:
    """200 when every component answers; the database is checked only when configured."""
    if not request.app[DB_KEY]:
        return web.json_response({"status": "ok", "components": {"database": "not_configured"}})
    try:
        pool = request.app.get(POOL_KEY) or await _connect(request.app)
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return web.json_response(
            {"status": "unavailable", "components": {"database": f"error: {type(exc).__name__}"}},
            status=503,
        )
    return web.json_response({"status": "ok", "components": {"database": "ok"}})


async def _connect(app: web.Application) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(app[DB_KEY], min_size=0, max_size=2, timeout=2)
    app[POOL_KEY] = pool
    return pool


async def orders(request: web.Request) -> web.Response:
    return await _echo(request, "orders")


async def order(request: web.Request) -> web.Response:
    return await _echo(request, "order", order_id=request.match_info["order_id"])


async def reports(request: web.Request) -> web.Response:
    return await _echo(request, "reports")


async def admin(request: web.Request) -> web.Response:
    return await _echo(request, "admin")


async def profile(request: web.Request) -> web.Response:
    return await _echo(request, "profile")


async def status(request: web.Request) -> web.Response:
    return await _echo(request, "status")


async def slow(request: web.Request) -> web.Response:
    """Answers after ?ms= milliseconds (at most 30 s): for timeout tests."""
    try:
        delay_ms = min(max(int(request.query.get("ms", "1000")), 0), MAX_SLOW_MS)
    except ValueError:
        raise web.HTTPBadRequest(text="ms must be an integer") from None
    await asyncio.sleep(delay_ms / 1000)
    return await _echo(request, "slow", delayed_ms=delay_ms)


async def upload(request: web.Request) -> web.Response:
    """Reads the stream itself so that only this route takes bodies above the default limit."""
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > UPLOAD_MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=UPLOAD_MAX_BODY, actual_size=size)
    return web.json_response(
        {
            "resource": "upload",
            "method": request.method,
            "path": request.path,
            "headers": dict(request.headers),
            "body_bytes": size,
        }
    )


async def _close_pool(app: web.Application) -> None:
    pool = app.get(POOL_KEY)
    if pool is not None:
        await pool.close()


def create_app(database_url: str = "") -> web.Application:
    app = web.Application(client_max_size=DEFAULT_MAX_BODY)
    app[DB_KEY] = database_url
    app.on_cleanup.append(_close_pool)
    app.router.add_get("/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_route("GET", "/api/v1/orders", orders)
    app.router.add_route("POST", "/api/v1/orders", orders)
    app.router.add_get("/api/v1/orders/{order_id}", order)
    app.router.add_get("/api/v1/reports", reports)
    app.router.add_get("/api/v1/reports/{name}", reports)
    app.router.add_route("*", "/api/v1/admin", admin)
    app.router.add_route("*", "/api/v1/admin/{tail:.*}", admin)
    app.router.add_get("/api/v1/me", profile)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/slow", slow)
    app.router.add_post("/api/v1/uploads", upload)
    return app
