"""BudgetStore on Redis: one Lua script checks every window and consumes only if all have room."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as redis_async
from redis.exceptions import RedisError

from authz_service.errors import DependencyUnavailableError
from authz_service.ports import BudgetConsumption, BudgetWindow, consumption_if

# KEYS: one counter per window. ARGV[1]: cost; then limit_i, ttl_i per key.
# Returns {1, used_1, ...} after consuming, or {0, exceeded_index (1-based), used_1, ...}.
CHECK_AND_CONSUME = """
local cost = tonumber(ARGV[1])
local used = {}
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  used[i] = current
  if current + cost > tonumber(ARGV[2 * i]) then
    local refused = {0, i}
    for j = 1, #KEYS do
      refused[j + 2] = tonumber(redis.call('GET', KEYS[j]) or '0')
    end
    return refused
  end
end
local consumed = {1}
for i, key in ipairs(KEYS) do
  local value = redis.call('INCRBY', key, cost)
  if value == cost then
    redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1]))
  end
  consumed[i + 1] = value
end
return consumed
"""


class RedisBudgetStore:
    """Script registered once (EVALSHA, reloaded by redis-py on NOSCRIPT); one pooled client."""

    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._client = redis_async.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._script = self._client.register_script(CHECK_AND_CONSUME)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        args: list[int] = [cost]
        for window in windows:
            args += [window.limit, window.ttl_seconds]
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._script(keys=[w.key for w in windows], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc
        values = [int(v) for v in reply]
        if values[0] == 1:
            return BudgetConsumption(allowed=True, used=tuple(values[1:]))
        return BudgetConsumption(
            allowed=False, used=tuple(values[2:]), exceeded_index=values[1] - 1
        )

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        if not windows:
            return BudgetConsumption(allowed=True, used=())
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._client.mget([w.key for w in windows])
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc
        return consumption_if(windows, [int(v or 0) for v in reply], cost)

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout * 4):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._client.aclose()
