"""BudgetStore on Redis: Lua scripts that consume or reserve only if every window has room."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as redis_async
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from authz_service.errors import DependencyUnavailableError
from authz_service.ports import (
    BudgetConsumption,
    BudgetReservation,
    BudgetWindow,
    consumption_if,
)
from gateway_contract.runtime import BudgetSubject, Window


def counter_key(subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
    """`budget:{kind:id}:metric:window:period`; one key per subject kind, id and window.

    The hash tag `{kind:id}` keeps a subject's counters in one Redis Cluster slot; `%`, `{`
    and `}` in an id are escaped so the tag is always the whole subject and no two subjects
    (or a crafted id and another subject's window) share a key.
    """
    escaped = subject.id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"budget:{{{subject.kind}:{escaped}}}:{metric}:{window}:{period}"


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

# A worker's lease (authz_service/adapters/budget_lease.py). KEYS: one counter per window.
# ARGV: cost, most, divisor, give_back, then limit_i, ttl_i per key. The give-back is the unused
# rest of this worker's previous block: it never takes a counter below zero and never recreates
# an expired one. Returns {block, used_1, ...} (usage before the reservation) or, when refused,
# {0, exceeded_index (1-based), used_1, ...}.
RESERVE = """
local cost, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local divisor, back = tonumber(ARGV[3]), tonumber(ARGV[4])
local used = {}
local room = nil
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if back > 0 and current > 0 then
    current = redis.call('DECRBY', key, math.min(back, current))
  end
  used[i] = current
  local left = tonumber(ARGV[3 + 2 * i]) - current
  if room == nil or left < room then room = left end
end
for i = 1, #KEYS do
  if used[i] + cost > tonumber(ARGV[3 + 2 * i]) then
    local refused = {0, i}
    for j = 1, #KEYS do refused[j + 2] = used[j] end
    return refused
  end
end
local block = math.min(room, math.max(cost, math.min(most, math.floor(room / divisor))))
local granted = {block}
for i, key in ipairs(KEYS) do
  if redis.call('INCRBY', key, block) == block then
    redis.call('EXPIRE', key, tonumber(ARGV[4 + 2 * i]))
  end
  granted[i + 1] = used[i]
end
return granted
"""

# KEYS: the counters of one block; ARGV[1]: its unused units (same floor as RESERVE's give-back).
RELEASE = """
local back = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if current > 0 then
    redis.call('DECRBY', key, math.min(back, current))
  end
end
return 0
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
        self._reserve = self._client.register_script(RESERVE)
        self._release = self._client.register_script(RELEASE)

    @staticmethod
    def counter_key(subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        return counter_key(subject, metric, window, period)

    async def _run(
        self, script: AsyncScript, windows: Sequence[BudgetWindow], head: list[int]
    ) -> list[int]:
        """Run a window script: ARGV is `head`, then limit and TTL per window; ints back."""
        args = list(head)
        for window in windows:
            args += [window.limit, window.ttl_seconds]
        try:
            async with asyncio.timeout(self._timeout):
                reply = await script(keys=[w.key for w in windows], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc
        return [int(v) for v in reply]

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        values = await self._run(self._script, windows, [cost])
        if values[0] == 1:
            return BudgetConsumption(allowed=True, used=tuple(values[1:]))
        return BudgetConsumption(
            allowed=False, used=tuple(values[2:]), exceeded_index=values[1] - 1
        )

    async def reserve(
        self, windows: Sequence[BudgetWindow], cost: int, *, most: int, divisor: int, give_back: int
    ) -> BudgetReservation:
        values = await self._run(self._reserve, windows, [cost, most, divisor, give_back])
        if values[0] > 0:
            return BudgetReservation(block=values[0], used=tuple(values[1:]))
        return BudgetReservation(block=0, used=tuple(values[2:]), exceeded_index=values[1] - 1)

    async def release(self, blocks: Sequence[tuple[Sequence[str], int]]) -> None:
        # one round trip for all of them; no transaction: each give-back is atomic on its own
        pipe = self._client.pipeline(transaction=False)
        for keys, units in blocks:
            await self._release(keys=list(keys), args=[units], client=pipe)
        try:
            async with asyncio.timeout(self._timeout * 4):
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc

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
