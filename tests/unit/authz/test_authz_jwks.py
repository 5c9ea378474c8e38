"""The JWKS key source against a local HTTP server: caching, bounded refresh, rotation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authz_service.adapters.jwks import JwksKeySource
from authz_service.errors import DependencyUnavailableError
from authz_service.ports import KeyUnknownError


def _jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class JwksServer:
    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    failing: bool = False
    url: str = ""


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer()

    async def handler(_: web.Request) -> web.Response:
        state.hits += 1
        if state.failing:
            return web.Response(status=500)
        return web.json_response({"keys": state.keys})

    app = web.Application()
    app.router.add_get("/jwks", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/jwks"
    yield state
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _source(
    server: JwksServer, session: aiohttp.ClientSession, clock: list[float]
) -> JwksKeySource:
    return JwksKeySource(
        "https://idp",
        server.url,
        session,
        timeout_seconds=2,
        cache_seconds=300,
        min_refresh_seconds=30,
        retain_seconds=600,
        clock=lambda: clock[0],
    )


async def test_keys_are_fetched_once_and_cached(
    jwks_server: JwksServer, session: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [_jwk("k1")]
    clock = [0.0]
    source = _source(jwks_server, session, clock)
    assert (await source.key_for("k1")).key_id == "k1"
    assert (await source.key_for("k1")).key_id == "k1"
    assert jwks_server.hits == 1


async def test_unknown_kid_refreshes_at_a_bounded_rate(
    jwks_server: JwksServer, session: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [_jwk("k1")]
    clock = [0.0]
    source = _source(jwks_server, session, clock)
    await source.key_for("k1")
    clock[0] = 31
    for _ in range(5):
        with pytest.raises(KeyUnknownError):
            await source.key_for("forged")
    assert jwks_server.hits == 2  # one refresh for the whole burst
    jwks_server.keys.append(_jwk("k2"))
    with pytest.raises(KeyUnknownError):
        await source.key_for("k2")  # within the interval: no new fetch
    clock[0] = 62
    assert (await source.key_for("k2")).key_id == "k2"
    assert jwks_server.hits == 3


async def test_rotated_out_keys_are_kept_for_the_retention(
    jwks_server: JwksServer, session: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [_jwk("old")]
    clock = [0.0]
    source = _source(jwks_server, session, clock)
    await source.key_for("old")
    jwks_server.keys = [_jwk("new")]
    clock[0] = 301  # cache expired: the refresh drops "old" from the published set
    assert (await source.key_for("new")).key_id == "new"
    assert (await source.key_for("old")).key_id == "old"
    clock[0] = 301 + 601
    with pytest.raises(KeyUnknownError):
        await source.key_for("old")


async def test_unreachable_jwks_without_keys_is_a_dependency_failure(
    jwks_server: JwksServer, session: aiohttp.ClientSession
) -> None:
    jwks_server.failing = True
    source = _source(jwks_server, session, [0.0])
    with pytest.raises(DependencyUnavailableError):
        await source.key_for("k1")


async def test_stale_keys_survive_a_failed_refresh(
    jwks_server: JwksServer, session: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [_jwk("k1")]
    clock = [0.0]
    source = _source(jwks_server, session, clock)
    await source.key_for("k1")
    jwks_server.failing = True
    clock[0] = 400
    assert (await source.key_for("k1")).key_id == "k1"
