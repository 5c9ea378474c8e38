"""AuditWriter: a bounded queue off the request path, batched upserts, an on-disk spool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import asyncpg
import orjson

from authz_service.audit import metrics
from authz_service.audit.clean import completion_row, decision_row
from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.retention import retention_loop
from authz_service.audit.spool import Entry, Spool, SpoolFull

log = logging.getLogger(__name__)

FullSpoolPolicy = Literal["fail_closed", "drop"]
Item = AuditRecord | AccessLogCompletion

RECORD_SQL = {
    "decision": "SELECT gateway_audit_record_decisions($1::jsonb)",
    "completion": "SELECT gateway_audit_record_completions($1::jsonb)",
}
# PostgreSQL is away, too slow or not ready for us: spool and retry later.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ReadOnlySQLTransactionError,
)
# errors about the data of one entry (data exception, integrity, program limit such as an
# over-long index key): the batch is written one by one and the refused entry set aside.
# Any other PostgresError (missing migration, privileges) counts as "unavailable".
DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})


def is_data_error(error: asyncpg.PostgresError) -> bool:
    return str(getattr(error, "sqlstate", "") or "")[:2] in DATA_ERROR_CLASSES


def entry_of(item: Item) -> Entry:
    if isinstance(item, AuditRecord):
        return ("decision", decision_row(item))
    return ("completion", completion_row(item))


def plain_dsn(url: str) -> str:
    """asyncpg wants postgresql://; accept the SQLAlchemy spelling postgresql+driver:// too."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class AuditWriter:
    """The AuditSink fed by the servicer and the access-log service (see audit/README.md)."""

    def __init__(  # noqa: PLR0917 - positional settings are the documented contract
        self,
        database_url: str | None,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        queue_bound: int = 10_000,
        spool_max_bytes: int = 256 << 20,
        full_spool_policy: FullSpoolPolicy = "fail_closed",
        *,
        write_timeout: float = 5.0,
        retry_interval: float = 1.0,
        retention_interval: float | None = 3600.0,
    ) -> None:
        if full_spool_policy not in ("fail_closed", "drop"):
            raise ValueError(f"full_spool_policy: {full_spool_policy!r} is not fail_closed|drop")
        self._dsn = plain_dsn(database_url) if database_url else None
        self._spool = Spool(spool_dir, spool_max_bytes)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_bound)
        self._policy: FullSpoolPolicy = full_spool_policy
        self._write_timeout = write_timeout
        self._retry_interval = retry_interval
        self._retention_interval = retention_interval
        self._conn: asyncpg.Connection | None = None
        self._retry_at = 0.0  # monotonic time before which PostgreSQL is not tried again
        self._held: list[Entry] = []  # fail_closed: entries neither PostgreSQL nor the spool took
        self._in_hand: list[Entry] = []  # being delivered: stop() spools them if it cancels
        self._spool_full = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- AuditSink: called on the request path, never blocks on PostgreSQL ---

    def submit(self, record: AuditRecord) -> None:
        self._enqueue(record)

    def complete(self, completion: AccessLogCompletion) -> None:
        self._enqueue(completion)

    def _enqueue(self, item: Item) -> None:
        if not self._closing:
            try:
                self._queue.put_nowait(item)
                metrics.QUEUE_DEPTH.set(self._queue.qsize())
                return
            except asyncio.QueueFull:
                pass
        # overloaded or stopped: one small unsynced append beats losing the record
        try:
            self._spool.append([entry_of(item)], sync=False)
            metrics.SPOOLED.inc()
        except SpoolFull:
            self._on_spool_full([entry_of(item)])
        except Exception:
            log.exception("audit entry for request %r lost", item.request_id)
            metrics.DROPPED.labels(reason="error").inc()

    # --- health ---

    @property
    def accepting(self) -> bool:
        """False when the spool is full and the policy is fail_closed: the servicer denies."""
        return not (self._policy == "fail_closed" and self._spool_full)

    @property
    def healthy(self) -> bool:
        running = bool(self._tasks) and not self._tasks[0].done()
        return running and self.accepting

    def status(self) -> dict[str, Any]:
        database = "disabled" if self._dsn is None else "up" if self._conn else "down"
        return {
            "healthy": self.healthy,
            "accepting": self.accepting,
            "database": database,
            "queue_depth": self._queue.qsize(),
            "spool_bytes": self._spool.size_bytes,
            "held": len(self._held),
        }

    # --- lifecycle ---

    async def start(self) -> None:
        self._closing = False
        self._tasks = [asyncio.create_task(self._run(), name="audit-writer")]
        if self._dsn and self._retention_interval:
            task = retention_loop(self._dsn, interval=self._retention_interval)
            self._tasks.append(asyncio.create_task(task, name="audit-retention"))

    async def stop(self, grace: float = 10.0) -> None:
        """Flush what is queued to PostgreSQL, or spool it (fsynced) when it cannot go."""
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks[1:]:
            task.cancel()
        if tasks:
            try:
                await asyncio.wait_for(tasks[0], grace)
            except TimeoutError:
                log.exception("audit writer did not drain within %.1fs; spooling the rest", grace)
        rest = self._held + self._in_hand + self._entries(self._drain_queue())
        self._held, self._in_hand = [], []
        if rest:
            await self._to_spool(rest)
        if self._held:
            log.error("audit: %d entries lost at shutdown: the spool is full", len(self._held))
            metrics.DROPPED.labels(reason="spool_full").inc(len(self._held))
        await self._disconnect()

    def _drain_queue(self) -> list[Item]:
        items: list[Item] = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _run(self) -> None:
        while not (self._closing and self._queue.empty()):
            batch = await self._next_batch()
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            entries = self._entries(batch)
            try:
                if entries or self._held:
                    await self._deliver(entries)
                elif not self._spool.empty:
                    await self._replay()
            except Exception:  # never let the writer die: its entries go to the spool
                log.exception("audit writer: unexpected error; entries go to the spool")
                rest, self._in_hand = self._in_hand or entries, []
                await self._to_spool(rest)

    @staticmethod
    def _entries(items: list[Item]) -> list[Entry]:
        entries: list[Entry] = []
        for item in items:
            try:
                entries.append(entry_of(item))
            except Exception:
                log.exception("audit entry for request %r cannot be encoded; lost", item.request_id)
                metrics.DROPPED.labels(reason="unencodable").inc()
        return entries

    async def _next_batch(self) -> list[Item]:
        """Up to batch_size items: waits for the first (or a retry tick), then flush_interval."""
        try:
            first = await asyncio.wait_for(self._queue.get(), self._retry_interval)
        except TimeoutError:
            return []
        batch = [first]
        deadline = time.monotonic() + self._flush_interval
        while len(batch) < self._batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        batch.extend(self._drain_upto(self._batch_size - len(batch)))
        return batch

    def _drain_upto(self, count: int) -> list[Item]:
        items: list[Item] = []
        while len(items) < count and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    # --- delivery: PostgreSQL first, the spool when it is away, order kept ---

    async def _deliver(self, entries: list[Entry]) -> None:
        entries, self._held = self._held + entries, []
        self._in_hand = entries  # a replayed duplicate is harmless; a lost entry is not
        if self._spool.empty and await self._write(entries):
            self._in_hand = []
            return
        await self._to_spool(entries)  # behind the backlog, so replay keeps the order
        self._in_hand = []
        await self._replay()

    async def _to_spool(self, entries: list[Entry]) -> None:
        if not entries:
            return
        try:
            await asyncio.to_thread(self._spool.append, entries)
        except (SpoolFull, OSError) as error:
            if isinstance(error, OSError):
                log.exception("audit spool cannot be written")
            self._on_spool_full(entries)
            return
        self._spool_full = False
        metrics.SPOOLED.inc(len(entries))

    def _on_spool_full(self, entries: list[Entry]) -> None:
        if self._policy == "drop":
            log.error("audit spool full: %d entries dropped (policy drop)", len(entries))
            metrics.DROPPED.labels(reason="spool_full").inc(len(entries))
            return
        if not self._spool_full:
            log.error("audit spool full: failing closed until PostgreSQL takes the backlog")
        self._spool_full = True
        self._held.extend(entries)

    async def _replay(self) -> None:
        """Write the spooled segments oldest first; each is removed once PostgreSQL has it."""
        if self._dsn is None or time.monotonic() < self._retry_at:
            return
        self._spool.seal()
        for segment in self._spool.segments():
            entries = await asyncio.to_thread(self._spool.read, segment)
            for start in range(0, len(entries), self._batch_size):
                if not await self._write(entries[start : start + self._batch_size]):
                    return  # PostgreSQL went away again; the segment stays (replay is idempotent)
            await asyncio.to_thread(self._spool.remove, segment)
            metrics.REPLAYED.inc(len(entries))
            log.info("audit spool: replayed %d entries from %s", len(entries), segment.name)
        self._spool_full = False

    async def _write(self, entries: Sequence[Entry]) -> bool:
        """True when PostgreSQL has them all (a refused one is set aside); False: it is away."""
        if not entries:
            return True
        if self._dsn is None or time.monotonic() < self._retry_at:
            return False
        try:
            await self._upsert(entries)
        except UNAVAILABLE as error:
            await self._unavailable(error)
            return False
        except asyncpg.PostgresError as error:
            if not is_data_error(error):
                await self._unavailable(error)
                return False
            log.warning("audit batch refused (%s); writing it one by one", error)
            return await self._write_one_by_one(entries)
        metrics.WRITTEN.inc(len(entries))
        return True

    async def _write_one_by_one(self, entries: Sequence[Entry]) -> bool:
        for entry in entries:
            try:
                await self._upsert([entry])
            except UNAVAILABLE as error:
                await self._unavailable(error)
                return False
            except asyncpg.PostgresError as error:
                if not is_data_error(error):
                    await self._unavailable(error)
                    return False
                request_id = entry[1].get("request_id")
                log.error("audit entry %r refused, kept in rejected.jsonl: %s", request_id, error)  # noqa: TRY400
                metrics.REJECTED.inc()
                await asyncio.to_thread(self._spool.reject, entry, str(error))
            else:
                metrics.WRITTEN.inc()
        return True

    async def _upsert(self, entries: Sequence[Entry]) -> None:
        conn = await self._connection()
        async with asyncio.timeout(self._write_timeout), conn.transaction():
            for kind in ("decision", "completion"):
                rows = [row for k, row in entries if k == kind]
                if rows:
                    await conn.fetchval(RECORD_SQL[kind], orjson.dumps(rows).decode())

    async def _connection(self) -> asyncpg.Connection:
        assert self._dsn is not None  # _write checked it
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._write_timeout,
                server_settings={"application_name": "authz-audit-writer"},
            )
            log.info("audit writer connected to PostgreSQL")
        return self._conn

    async def _unavailable(self, error: BaseException) -> None:
        if self._conn is not None or self._retry_at == 0.0:  # log once per outage
            log.warning("audit: PostgreSQL unavailable (%r); spooling to disk", error)
        self._retry_at = time.monotonic() + self._retry_interval
        await self._disconnect()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()
