"""The audit writer's PostgreSQL side: one upsert per batch, retry pacing, data errors set aside."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import orjson

from authz_service.audit import metrics
from authz_service.audit.clean import Row
from authz_service.audit.spool import Entry

log = logging.getLogger(__name__)

# decisions, completions and merged rows alike (migration 0007); sets only what each carries
RECORD_ROWS_SQL = "SELECT gateway_audit_record_rows($1::json)"
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

Reject = Callable[[Entry, str], Awaitable[None]]


def is_data_error(error: asyncpg.PostgresError) -> bool:
    return str(getattr(error, "sqlstate", "") or "")[:2] in DATA_ERROR_CLASSES


def plain_dsn(url: str) -> str:
    """asyncpg wants postgresql://; accept the SQLAlchemy spelling postgresql+driver:// too."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def merged_rows(entries: Sequence[Entry]) -> list[Row]:
    """One row per request id: a completion still in hand rides on its decision's INSERT.

    Saves PostgreSQL the second write (an UPDATE touching the row's indexes) for nearly every
    request. Later entries of a kind win, as a replay's would; the decision's created_at wins
    over Envoy's start time.
    """
    decisions: dict[object, Row] = {}
    completions: dict[object, Row] = {}
    for kind, row in entries:
        if kind == "decision":
            decisions[row.get("request_id")] = row
        else:
            completions[row.get("request_id")] = row
    rows = [
        completions.pop(request_id) | row if request_id in completions else row
        for request_id, row in decisions.items()
    ]
    rows.extend(completions.values())
    return rows


class AuditPostgres:
    """The writer's connection: `write` says True (stored) or False (away: spool and retry)."""

    def __init__(
        self, dsn: str | None, *, write_timeout: float, retry_interval: float, reject: Reject
    ) -> None:
        self._dsn = plain_dsn(dsn) if dsn else None
        self._write_timeout = write_timeout
        self._retry_interval = retry_interval
        self._reject = reject  # keeps an entry PostgreSQL refuses, with the reason
        self._conn: asyncpg.Connection | None = None
        self._retry_at = 0.0  # monotonic time before which PostgreSQL is not tried again

    @property
    def state(self) -> str:
        return "disabled" if self._dsn is None else "up" if self._conn else "down"

    @property
    def dsn(self) -> str | None:
        return self._dsn

    @property
    def ready(self) -> bool:
        """Worth a try: configured and not inside the pause after a failure."""
        return self._dsn is not None and time.monotonic() >= self._retry_at

    async def write(self, entries: Sequence[Entry]) -> bool:
        """True when PostgreSQL has them all (a refused one is set aside); False: it is away."""
        if not entries:
            return True
        if not self.ready:
            return False
        rows = merged_rows(entries)
        try:
            await self._upsert(rows)
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
        metrics.MERGED.inc(len(entries) - len(rows))
        return True

    async def _write_one_by_one(self, entries: Sequence[Entry]) -> bool:
        for entry in entries:
            try:
                await self._upsert([entry[1]])
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
                await self._reject(entry, str(error))
            else:
                metrics.WRITTEN.inc()
        return True

    async def _upsert(self, rows: list[Row]) -> None:
        conn = await self._connection()
        async with asyncio.timeout(self._write_timeout):
            await conn.fetchval(RECORD_ROWS_SQL, orjson.dumps(rows).decode())

    async def _connection(self) -> asyncpg.Connection:
        assert self._dsn is not None  # write checked it
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
        await self.disconnect()

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()
