"""BudgetStore on Redis: Lua scripts that consume or reserve only if every window has room."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

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

log = logging.getLogger(__name__)

# The ledger's identity: set once (NX) by the first service to use this Redis database, then
# checked by every script. Counters that vanish with it (FLUSHALL, FLUSHDB, a restart without
# persistence, an empty Redis swapped in) would hand every subject its whole budget again; a
# missing or different identity is a ledger lost, which fails closed (docs/ARCHITECTURE.md).
LEDGER_KEY = "budget:ledger"
LEDGER_LOST = "ledger_lost"
# A window's period (which day, which month) is read from this host's clock: a host whose
# clock is off spends in another period's counters (a day ahead: a whole new day's budget).
# Redis's clock is the one every instance shares, so a script refuses a caller too far off it.
CLOCK_SKEW = "clock_skew"
# the guard every window script starts with. ARGV's last four: the ledger key and identity,
# the caller's clock (ms) and the largest skew allowed (ms, 0: not checked).
_LEDGER_GUARD = """
local n = #ARGV
if redis.call('GET', ARGV[n - 3]) ~= ARGV[n - 2] then return {-1} end
local most_skew = tonumber(ARGV[n])
if most_skew > 0 then
  local now = redis.call('TIME')
  local skew = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[n - 1])
  if skew > most_skew or -skew > most_skew then return {-2, skew} end
end
"""
# adopt the ledger this database has, or start one: one atomic step for every worker
ADOPT_LEDGER = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


def counter_key(subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
    """`budget:{kind:id}:metric:window:period`; one key per subject kind, id and window.

    The hash tag `{kind:id}` keeps a subject's counters in one Redis Cluster slot; `%`, `{`
    and `}` in an id are escaped so the tag is always the whole subject and no two subjects
    (or a crafted id and another subject's window) share a key.
    """
    escaped = subject.id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"budget:{{{subject.kind}:{escaped}}}:{metric}:{window}:{period}"


# KEYS: one counter per window. ARGV[1]: cost; then limit_i, ttl_i per key (then the ledger's).
# Returns {1, used_1, ...} after consuming, or {0, exceeded_index (1-based), used_1, ...}, or
# {-1} when the ledger is lost.
CHECK_AND_CONSUME = (
    _LEDGER_GUARD
    + """
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
)

# A worker's lease (authz_service/adapters/budget_lease.py). KEYS: one counter per window.
# ARGV: cost, most, divisor, give_back, then limit_i, ttl_i per key. The give-back is the unused
# rest of this worker's previous block: it never takes a counter below zero and never recreates
# an expired one. Returns {block, used_1, ...} (usage before the reservation) or, when refused,
# {0, exceeded_index (1-based), used_1, ...}; {-1} when the ledger is lost.
RESERVE = (
    _LEDGER_GUARD
    + """
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
)

# KEYS: the counters of one block; ARGV[1]: its unused units (same floor as RESERVE's give-back).
# A lost ledger takes nothing back: the counters it would lower are gone or not its own.
RELEASE = (
    _LEDGER_GUARD
    + """
local back = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if current > 0 then
    redis.call('DECRBY', key, math.min(back, current))
  end
end
return 0
"""
)


class RedisBudgetStore:
    """Scripts registered once (EVALSHA, reloaded by redis-py on NOSCRIPT); one pooled client.

    The first call adopts the database's ledger identity (or starts one); every later script
    checks it, so counters lost since (a flush, an empty Redis) are refused, never re-spent.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        max_clock_skew_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_skew_ms = round(max_clock_skew_seconds * 1000)
        self._clock = clock
        self._client = redis_async.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._script = self._client.register_script(CHECK_AND_CONSUME)
        self._reserve = self._client.register_script(RESERVE)
        self._release = self._client.register_script(RELEASE)
        self._adopt = self._client.register_script(ADOPT_LEDGER)
        self._ledger: bytes | None = None
        self._lost_logged = False
        self._skew_logged = False

    @staticmethod
    def counter_key(subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        return counter_key(subject, metric, window, period)

    async def _ledger_id(self) -> bytes:
        """The identity this store checks: adopted once, on first use (under the timeout)."""
        if self._ledger is None:
            reply = await self._adopt(keys=[LEDGER_KEY], args=[uuid.uuid4().hex])
            self._ledger = reply if isinstance(reply, bytes) else str(reply).encode()
        return self._ledger

    def _lost(self) -> DependencyUnavailableError:
        if not self._lost_logged:  # once: every budgeted request would log it otherwise
            self._lost_logged = True
            log.error(
                "budget ledger lost: Redis no longer has the counters this service spent "
                "against (flushed, restarted without persistence, or replaced); budgeted "
                "requests fail closed until the authz service is restarted",
                extra={"ledger_key": LEDGER_KEY},
            )
        return DependencyUnavailableError("redis", LEDGER_LOST)

    def _skewed(self, skew_ms: int) -> DependencyUnavailableError:
        if not self._skew_logged:  # once per episode: it is logged again after a good call
            self._skew_logged = True
            log.error(
                "clock skew: this host's clock and Redis's differ by %.3f s (at most %.3f s "
                "allowed); budget windows would be read from the wrong period, so budgeted "
                "requests fail closed until the clocks agree",
                skew_ms / 1000, self._max_skew_ms / 1000,
            )  # fmt: skip
        return DependencyUnavailableError("redis", CLOCK_SKEW)

    async def _run(
        self, script: AsyncScript, windows: Sequence[BudgetWindow], head: list[int]
    ) -> list[int]:
        """Run a window script: ARGV is `head`, limit and TTL per window, the ledger; ints back."""
        args: list[int | str | bytes] = list(head)
        for window in windows:
            args += [window.limit, window.ttl_seconds]
        try:
            async with asyncio.timeout(self._timeout):
                args += [*await self._guard()]
                reply = await script(keys=[w.key for w in windows], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc
        values = [int(v) for v in reply]
        if values[0] == -1:
            raise self._lost()
        if values[0] == -2:
            raise self._skewed(values[1])
        self._skew_logged = False
        return values

    async def _guard(self) -> tuple[str, bytes, int, int]:
        """The guard's ARGV: ledger key and identity, this host's clock, the skew allowed."""
        ledger = await self._ledger_id()
        return LEDGER_KEY, ledger, round(self._clock() * 1000), self._max_skew_ms

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
        try:
            async with asyncio.timeout(self._timeout * 4):
                guard = await self._guard()
                pipe = self._client.pipeline(transaction=False)
                for keys, units in blocks:
                    args: list[int | str | bytes] = [units, *guard]
                    await self._release(keys=list(keys), args=args, client=pipe)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        if not windows:
            return BudgetConsumption(allowed=True, used=())
        try:
            async with asyncio.timeout(self._timeout):
                ledger = await self._ledger_id()
                reply = await self._client.mget([LEDGER_KEY, *(w.key for w in windows)])
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailableError("redis", type(exc).__name__) from exc
        if reply[0] != ledger:
            raise self._lost()
        return consumption_if(windows, [int(v or 0) for v in reply[1:]], cost)

    async def healthy(self) -> bool:
        """Redis answers, holds the ledger this store adopted (if any), and agrees on the time."""
        try:
            async with asyncio.timeout(self._timeout * 4):
                seconds, micros = await self._client.time()
                skew_ms = abs(seconds * 1000 + micros // 1000 - round(self._clock() * 1000))
                if self._max_skew_ms and skew_ms > self._max_skew_ms:
                    return False
                return self._ledger is None or await self._client.get(LEDGER_KEY) == self._ledger
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._client.aclose()
