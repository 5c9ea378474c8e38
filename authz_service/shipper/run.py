"""`python -m authz_service audit ship`: journals and Envoy's access logs into PostgreSQL.

Each round reads the access logs' sizes, then the journals, then the access logs up to those
sizes (so a completion's decision is already read), joins them, and writes one batch: rows
and the sources' offsets in one transaction. When PostgreSQL is away the batch is retried;
the journals wait on disk meanwhile (the authz service refuses checks past its bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import asyncpg

from authz_service.shipper import metrics
from authz_service.shipper.access_logs import AccessLogReader, load_manifest
from authz_service.shipper.envoy_watch import EnvoyLogWatch
from authz_service.shipper.health import start_health_server
from authz_service.shipper.join import Joiner, Pair
from authz_service.shipper.journals import JournalReader
from authz_service.shipper.model import Item, Progress, SourceState
from authz_service.shipper.retention import retention_loop
from authz_service.shipper.settings import ShipperSettings
from authz_service.shipper.store import UNAVAILABLE, Store, is_row_error

log = logging.getLogger(__name__)

# A batch keeps thousands of row dicts alive (acyclic: strings, numbers): with the default
# thresholds the cyclic collector walks them again and again, which measured as much CPU as
# parsing them. Rarer collections; cycles are still collected, later.
GC_THRESHOLDS = (200_000, 50, 1000)
BACKLOG_SCAN_SECONDS = 1.0
RATE_WINDOW_SECONDS = 10.0
STOP_GRACE_SECONDS = 10.0  # on SIGTERM: this long to write what is read, then exit anyway


class Shipper:
    def __init__(self, settings: ShipperSettings) -> None:
        self.settings = settings
        self.progress = Progress()
        self.store = Store(settings.database_url, timeout=settings.write_timeout_seconds)
        self.journals = JournalReader(settings.journal_dir, self.progress)
        manifest, names = settings.access_log_manifest, settings.access_log_names()
        streams = load_manifest(manifest, names) if manifest else []
        self.logs = AccessLogReader(streams, self.progress, settings.access_log_rotate_bytes)
        self.envoys = EnvoyLogWatch(streams)
        self.joiner = Joiner(settings.hold_seconds)
        self._ready: list[Pair] = []
        self._database_up = False
        self._last_error = ""
        self._rows_total = 0
        self._written: deque[tuple[float, int]] = deque()
        self._backlog = 0
        self._lag = 0.0

    # --- health ---

    def status(self) -> dict[str, Any]:
        oldest = self.progress.oldest_pending_us()
        age = max(0.0, time.time() - oldest / 1e6) if oldest else 0.0
        return {
            "healthy": self._database_up,
            "database": "up" if self._database_up else "down",
            "last_error": self._last_error or None,
            "backlog_bytes": self._backlog,
            "oldest_unshipped_age_seconds": round(age, 3),
            "lag_seconds": round(self._lag, 3),
            "rows_per_second": round(self._rate(), 1),
            "rows_total": self._rows_total,
            "held_decisions": len(self.joiner.held),
            "sources": len(self.progress.committed),
            "missing_journals": sorted(self.journals.missing),
            "missing_access_logs": sorted(self.envoys.missing),
            "envoy_log_write_failures": dict(sorted(self.envoys.failures.items())),
        }

    def _rate(self) -> float:
        now = time.monotonic()
        while self._written and self._written[0][0] < now - RATE_WINDOW_SECONDS:
            self._written.popleft()
        return sum(rows for _, rows in self._written) / RATE_WINDOW_SECONDS

    async def _measure(self) -> None:
        while True:
            await asyncio.to_thread(self.envoys.check)
            backlog = await asyncio.to_thread(self.journals.backlog_bytes)
            self._backlog = backlog + await asyncio.to_thread(self.logs.backlog_bytes)
            metrics.BACKLOG_BYTES.set(self._backlog)
            oldest = self.progress.oldest_pending_us()
            metrics.OLDEST_AGE.set(max(0.0, time.time() - oldest / 1e6) if oldest else 0.0)
            metrics.ROWS_PER_SECOND.set(self._rate())
            await asyncio.sleep(BACKLOG_SCAN_SECONDS)

    # --- the loop ---

    async def _start(self, stop: asyncio.Event) -> bool:
        """Connect and load the committed offsets, retrying until PostgreSQL answers."""
        while not stop.is_set():
            try:
                self.progress.committed.update(await self.store.load_states())
            except (*UNAVAILABLE, asyncpg.PostgresError) as error:
                self._failed(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.retry_seconds)
                continue
            self._database_up = True
            log.info("audit shipper started", extra={"sources": len(self.progress.committed)})
            return True
        return False

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._start(stop):
            return
        while not stop.is_set():
            if not await self.round(final=False):
                # idle: a rotation whose reopen Envoy missed must not wait for the next commit
                await asyncio.to_thread(self.logs.retry_reopen)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_seconds)
        await self._drain()

    async def _drain(self) -> None:
        """SIGTERM: write what was read (held decisions too), within a grace."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                while await self.round(final=True):
                    pass

    async def round(self, *, final: bool) -> bool:
        """Write one batch (reading the next meanwhile); False when there was nothing to do."""
        budget = self.settings.batch_rows
        if len(self._ready) < budget and not final:
            await self._read(budget)
        now = time.monotonic()
        self._ready += self.joiner.expired(now, everything=final)
        batch, self._ready = self._ready[:budget], self._ready[budget:]
        states = self._prospective(batch)  # before the next read: it only appends
        if not batch and not states:
            return False
        # PostgreSQL inserts this batch while this process reads and joins the next one
        ahead = not final and len(self._ready) < budget
        written = await self._write(batch, states, self._read_now if ahead else None)
        if written:
            await asyncio.to_thread(self._after_commit)
            return True
        self._ready = batch + self._ready
        await asyncio.sleep(self.settings.retry_seconds)
        return not final

    async def _read(self, budget: int) -> None:
        # on the loop, not in a thread: /health reads the same pending items
        self._read_into(budget)

    def _read_now(self) -> None:
        """Read ahead on the event loop while PostgreSQL works (a failure here waits a round)."""
        try:
            self._read_into(self.settings.batch_rows)
        except OSError:
            log.exception("audit shipper: reading ahead failed; next round reads again")

    def _read_into(self, budget: int) -> None:
        """The access logs' sizes, the journals, then the logs up to those sizes; joined."""
        snapshot = self.logs.snapshot()
        items: list[Item] = self.journals.read(budget) + self.logs.read(snapshot, budget)
        for item in items:
            self.progress.add(item)
        self._ready += self.joiner.add(items, time.monotonic())

    def _prospective(self, batch: list[Pair]) -> list[SourceState]:
        for pair in batch:
            for item in pair.items:
                item.batched = True
        changed = []
        for state in self.progress.prospective():
            old = self.progress.committed.get(state.key)
            if old is None or (old.position, old.finished, old.high_seq) != (
                state.position,
                state.finished,
                state.high_seq,
            ):
                changed.append(state)
        return changed

    async def _write(
        self,
        batch: list[Pair],
        states: list[SourceState],
        meanwhile: Callable[[], None] | None = None,
    ) -> bool:
        started = time.monotonic()
        try:
            refused = await self.store.write(batch, states, meanwhile)
        except (*UNAVAILABLE, asyncpg.PostgresError) as error:
            self.progress.abandon()
            self.store.drop()
            if isinstance(error, asyncpg.PostgresError) and not is_row_error(error):
                log.error("audit batch not written (will retry): %s", error)  # noqa: TRY400
            self._failed(error)
            return False
        self.progress.commit(states)
        self._committed(batch, refused, time.monotonic() - started)
        return True

    def _committed(self, batch: list[Pair], refused: int, seconds: float) -> None:
        if not self._database_up:
            log.info("audit shipper: PostgreSQL is back")
        self._database_up, self._last_error = True, ""
        metrics.DATABASE_UP.set(1)
        metrics.BATCHES.inc()
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.ERRORS.labels(kind="rejected").inc(refused)
        merged = sum(1 for pair in batch if pair.decision and pair.completion)
        decisions = sum(1 for pair in batch if pair.completion is None)
        metrics.ROWS.labels(half="merged").inc(merged)
        metrics.ROWS.labels(half="decision").inc(decisions)
        metrics.ROWS.labels(half="completion").inc(len(batch) - merged - decisions)
        self._rows_total += len(batch)
        self._written.append((time.monotonic(), len(batch)))
        newest = max((i.at_us for p in batch for i in p.items), default=0)
        if newest:
            self._lag = max(0.0, time.time() - newest / 1e6)
            metrics.LAG.set(self._lag)

    def _failed(self, error: BaseException) -> None:
        if self._database_up or not self._last_error:
            log.warning("audit shipper: PostgreSQL unavailable (%r); retrying", error)
        self._database_up, self._last_error = False, repr(error)[:300]
        metrics.DATABASE_UP.set(0)
        metrics.ERRORS.labels(kind="unavailable").inc()

    def _after_commit(self) -> None:
        self.journals.cleanup()
        self.logs.after_commit()


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # what was built at start lives as long as the process
    gc.set_threshold(*GC_THRESHOLDS)


async def ship(settings: ShipperSettings, started: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT: then write what was read and exit."""
    shipper = Shipper(settings)
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = None
    if settings.health_address:
        runner = await start_health_server(settings.health_address, shipper.status)
    tasks = [asyncio.create_task(shipper._measure(), name="shipper-measure")]
    if settings.retention_database_url:
        interval = settings.retention_interval_seconds
        tasks.append(asyncio.create_task(retention_loop(settings.retention_database_url,
                                                        interval=interval)))  # fmt: skip
    if started is not None:
        started.set()
    try:
        await shipper.run(stop)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await shipper.store.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("audit shipper stopped")
