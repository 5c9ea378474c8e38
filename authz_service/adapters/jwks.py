"""JWKS key source: fetched with aiohttp, cached, refreshed on an unknown kid at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from jwt import PyJWK

from authz_service.adapters.static_keys import KeyConfigError, keys_of_jwks
from authz_service.errors import DependencyUnavailableError
from authz_service.ports import KeyUnknownError

log = logging.getLogger(__name__)


class JwksKeySource:
    """Keys of one issuer's JWKS; keys that leave the set stay valid for `retain_seconds`."""

    def __init__(
        self,
        issuer: str,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float,
        cache_seconds: float,
        min_refresh_seconds: float,
        retain_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._retain = retain_seconds
        self._clock = clock
        # kid -> (key, retained until; None while the key is in the latest set)
        self._keys: dict[str | None, tuple[PyJWK, float | None]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> PyJWK:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._cache_seconds
        if stale and self._may_refresh(now):
            await self._refresh()
        key = self._lookup(kid)
        if key is None and self._may_refresh(self._clock()):
            await self._refresh()
            key = self._lookup(kid)
        if key is None:
            if self._fetched_at is None:
                raise DependencyUnavailableError("jwks", f"no key set fetched for {self._issuer}")
            raise KeyUnknownError(kid)
        return key

    async def close(self) -> None:
        return None

    def _may_refresh(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_refresh

    def _lookup(self, kid: str | None) -> PyJWK | None:
        entry = self._keys.get(kid)
        if entry is None and kid is not None:
            return None
        if entry is None:
            # A token without kid is accepted only when the set has exactly one key.
            current = [key for key, until in self._keys.values() if until is None]
            return current[0] if len(current) == 1 else None
        key, retained_until = entry
        if retained_until is not None and retained_until <= self._clock():
            del self._keys[kid]
            return None
        return key

    async def _refresh(self) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another task refreshed while this one waited
            self._attempted_at = self._clock()
            try:
                fresh = keys_of_jwks(self._issuer, await self._fetch())
            except (
                aiohttp.ClientError,
                TimeoutError,
                ValueError,
                TypeError,
                KeyConfigError,
            ) as exc:
                log.warning(
                    "jwks refresh failed",
                    extra={"issuer": self._issuer, "error": type(exc).__name__},
                )
                return
            now = self._clock()
            for kid, (key, until) in list(self._keys.items()):
                if kid not in fresh and until is None:
                    self._keys[kid] = (key, now + self._retain)
            self._keys.update({kid: (key, None) for kid, key in fresh.items()})
            self._fetched_at = now

    async def _fetch(self) -> dict[str, Any]:
        async with self._session.get(self._url, timeout=self._timeout) as response:
            response.raise_for_status()
            document = await response.json(content_type=None)
        if not isinstance(document, dict):
            raise TypeError("JWKS is not a JSON object")
        return document
