"""AuditWriter: a bounded queue off the request path, batched upserts, an on-disk spool."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from authz_service.audit import metrics
from authz_service.audit.batch_queue import BatchQueue
from authz_service.audit.clean import completion_row, decision_row
from authz_service.audit.postgres import AuditPostgres, plain_dsn
from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.retention import retention_loop
from authz_service.audit.spool import Entry, Spool, SpoolFull

__all__ = ["AuditWriter", "FullSpoolPolicy", "plain_dsn"]

log = logging.getLogger(__name__)

FullSpoolPolicy = Literal["fail_closed", "drop"]
Item = AuditRecord | AccessLogCompletion


def hold_for_completion(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(write now, hold one more batch): decisions whose completion has not come yet wait.

    Envoy buffers access-log entries (up to its buffer_flush_interval), so a completion often
    misses its decision's batch; one batch more lets most ride on the decision's INSERT.
    """
    completed = {i.request_id for i in items if type(i) is AccessLogCompletion}
    now: list[Item] = []
    held: list[Item] = []
    for item in items:
        if type(item) is AuditRecord and item.request_id not in completed:
            held.append(item)
        else:
            now.append(item)
    return now, held


# Rows encoded between two yields to the event loop: a batch of hundreds encoded in one go
# blocked the loop for 1-2 ms every flush, which showed as the checks' p99 at a fixed rate.
ENCODE_SLICE = 32


def entry_of(item: Item) -> Entry:
    if isinstance(item, AuditRecord):
        return ("decision", decision_row(item))
    return ("completion", completion_row(item))


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
        self._spool = Spool(spool_dir, spool_max_bytes)
        self._db = AuditPostgres(
            database_url, write_timeout=write_timeout, retry_interval=retry_interval,
            reject=self._reject,
        )  # fmt: skip
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: BatchQueue[Item] = BatchQueue(queue_bound, batch_size)
        self._policy: FullSpoolPolicy = full_spool_policy
        self._retry_interval = retry_interval
        self._retention_interval = retention_interval
        self._held: list[Entry] = []  # fail_closed: entries neither PostgreSQL nor the spool took
        self._in_hand: list[Entry] = []  # being delivered: stop() spools them if it cancels
        self._waiting: list[Item] = []  # decisions held one batch for their completion
        self._spool_full = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- AuditSink: called on the request path, never blocks on PostgreSQL ---

    def submit(self, record: AuditRecord) -> None:
        self._enqueue(record)

    def complete(self, completion: AccessLogCompletion) -> None:
        self._enqueue(completion)

    def _enqueue(self, item: Item) -> None:
        if not self._closing and self._queue.put(item):
            return
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
        return {
            "healthy": self.healthy,
            "accepting": self.accepting,
            "database": self._db.state,
            "queue_depth": self._depth(),
            "spool_bytes": self._spool.size_bytes,
            "held": len(self._held),
        }

    def _depth(self) -> int:
        return len(self._queue) + len(self._waiting)

    # --- lifecycle ---

    async def start(self) -> None:
        self._closing = False
        # read at scrape time: nothing to update per entry
        metrics.QUEUE_DEPTH.set_function(self._depth)
        self._tasks = [asyncio.create_task(self._run(), name="audit-writer")]
        if self._db.dsn and self._retention_interval:
            task = retention_loop(self._db.dsn, interval=self._retention_interval)
            self._tasks.append(asyncio.create_task(task, name="audit-retention"))

    async def stop(self, grace: float = 10.0) -> None:
        """Flush what is queued to PostgreSQL, or spool it (fsynced) when it cannot go."""
        self._closing = True
        self._queue.wake()
        tasks, self._tasks = self._tasks, []
        for task in tasks[1:]:
            task.cancel()
        if tasks:
            try:
                await asyncio.wait_for(tasks[0], grace)
            except TimeoutError:
                log.exception("audit writer did not drain within %.1fs; spooling the rest", grace)
        rest = self._held + self._in_hand + await self._entries(self._waiting + self._queue.take())
        self._held, self._in_hand, self._waiting = [], [], []
        if rest:
            await self._to_spool(rest)
        if self._held:
            log.error("audit: %d entries lost at shutdown: the spool is full", len(self._held))
            metrics.DROPPED.labels(reason="spool_full").inc(len(self._held))
        await self._db.disconnect()

    async def _run(self) -> None:
        while not (self._closing and not self._queue and not self._waiting):
            entries = await self._entries(await self._next_items())
            try:
                if entries or self._held:
                    await self._deliver(entries)
                elif not self._spool.empty:
                    await self._replay()
            except Exception:  # never let the writer die: its entries go to the spool
                log.exception("audit writer: unexpected error; entries go to the spool")
                rest, self._in_hand = self._in_hand or entries, []
                await self._to_spool(rest)

    async def _next_items(self) -> list[Item]:
        """A batch, with last batch's held decisions; holds this batch's unmatched ones."""
        if self._closing:
            batch = self._queue.take(self._batch_size)
        else:
            first_wait = self._flush_interval if self._waiting else self._retry_interval
            batch = await self._queue.next_batch(first_wait, self._flush_interval)
        items, self._waiting = self._waiting, []
        if self._closing or self._db.dsn is None:  # no merging without PostgreSQL
            return items + batch
        now, self._waiting = hold_for_completion(batch)
        return items + now

    @staticmethod
    async def _entries(items: list[Item]) -> list[Entry]:
        entries: list[Entry] = []
        for index, item in enumerate(items):
            if index and not index % ENCODE_SLICE:
                await asyncio.sleep(0)  # let checks run between slices of the batch
            try:
                entries.append(entry_of(item))
            except Exception:
                log.exception("audit entry for request %r cannot be encoded; lost", item.request_id)
                metrics.DROPPED.labels(reason="unencodable").inc()
        return entries

    # --- delivery: PostgreSQL first, the spool when it is away, order kept ---

    async def _deliver(self, entries: list[Entry]) -> None:
        entries, self._held = self._held + entries, []
        self._in_hand = entries  # a replayed duplicate is harmless; a lost entry is not
        if self._spool.empty and await self._db.write(entries):
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
        if not self._db.ready:
            return
        self._spool.seal()
        for segment in self._spool.segments():
            entries = await asyncio.to_thread(self._spool.read, segment)
            for start in range(0, len(entries), self._batch_size):
                if not await self._db.write(entries[start : start + self._batch_size]):
                    return  # PostgreSQL went away again; the segment stays (replay is idempotent)
            await asyncio.to_thread(self._spool.remove, segment)
            metrics.REPLAYED.inc(len(entries))
            log.info("audit spool: replayed %d entries from %s", len(entries), segment.name)
        self._spool_full = False

    async def _reject(self, entry: Entry, reason: str) -> None:
        await asyncio.to_thread(self._spool.reject, entry, reason)
