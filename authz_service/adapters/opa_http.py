"""PolicyEngine over OPA's data API: POST /v1/data/<path> on a pooled keep-alive session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from authz_service.errors import DependencyUnavailableError


class OpaHttpEngine:
    def __init__(self, base_url: str, *, timeout_seconds: float, pool_size: int) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # created lazily: a ClientSession belongs to the running event loop
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        url = f"{self._base}/v1/data/{path.strip('/')}"
        try:
            async with self._client().post(
                url,
                data=orjson.dumps({"input": input_doc}),
                headers={"content-type": "application/json"},
            ) as response:
                if response.status != 200:
                    raise DependencyUnavailableError("opa", f"HTTP {response.status}")
                document = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise DependencyUnavailableError("opa", type(exc).__name__) from exc
        result = document.get("result") if isinstance(document, dict) else None
        return result if isinstance(result, dict) else None

    async def healthy(self) -> bool:
        try:
            async with self._client().get(f"{self._base}/health") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
