"""The shipper's PostgreSQL side: rows and offsets in one transaction, never an overwrite.

Each batch: COPY into a temporary staging table, INSERT ... ON CONFLICT DO NOTHING (a row
re-read after a crash is already there), then each half's columns set where the row does not
have that half yet, then the sources' offsets and chain state. A row PostgreSQL refuses is
kept whole in gateway_audit_rejected, so a batch never blocks on one bad record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
import orjson

from authz_service.audit.columns import (
    CHAIN_COLUMNS,
    DIFFERS_COLUMN,
    KEY_NAMES,
    KINDS,
    ROW_COLUMNS,
    SHARED_NAMES,
    half_columns,
)
from authz_service.shipper.join import Pair, differs
from authz_service.shipper.model import Position, SourceKey, SourceState
from authz_service.shipper.sql import (
    CREATE_STAGING,
    FILL_COMPLETIONS,
    FILL_DECISIONS,
    INSERT_SQL,
    REJECT_SQL,
    STAGING,
    STATE_SQL,
)

log = logging.getLogger(__name__)

# Errors after which the connection cannot be trusted: dropped, the batch retried on a new
# one. InternalClientError is asyncpg's own protocol state gone wrong (e.g. "cannot switch to
# state 15; another operation is in progress" after the server died mid-reply): a broken
# connection like any other, never a reason for the shipper to exit.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ReadOnlySQLTransactionError,
)
WRITE_ONCE_REFUSAL = "audit rows are write-once"


def is_row_error(error: BaseException) -> bool:
    """An error about one row's data (type, constraint, size, a write-once refusal)."""
    if not isinstance(error, asyncpg.PostgresError):
        return False
    state = str(getattr(error, "sqlstate", "") or "")
    return state[:2] in ("22", "23", "54") or (
        state == "42501" and str(error).startswith(WRITE_ONCE_REFUSAL)
    )


class RowsRefusedError(Exception):
    """PostgreSQL refused the data of a row (is_row_error); the database itself is fine."""


@contextlib.contextmanager
def refused_rows() -> Iterator[None]:
    """Raise PostgreSQL's refusal of a row's data as RowsRefusedError; other errors pass as
    they are (the caller's caller retries those as "PostgreSQL away")."""
    try:
        yield
    except asyncpg.PostgresError as error:
        if is_row_error(error):
            raise RowsRefusedError(str(error)) from error
        raise


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# the COPY's columns in three stretches: the key and shared facts (from the first half),
# the decision's columns, the completion's; and the JSON ones, which asyncpg takes as text
_FRONT = ROW_COLUMNS[: len(KEY_NAMES) + len(SHARED_NAMES)]
_DECISION = half_columns("decision")
_COMPLETION = half_columns("completion")
_NO_DECISION: tuple[None, ...] = (None,) * len(_DECISION)
_NO_COMPLETION: tuple[None, ...] = (None,) * len(_COMPLETION)
_JSON_AT = tuple(
    i for i, c in enumerate(ROW_COLUMNS) if KINDS.get(c) == "json" or c.endswith("_differs")
)
_COMPLETION_DIFFERS_AT = ROW_COLUMNS.index(DIFFERS_COLUMN["completion"])
assert (*_FRONT, *_DECISION, *_COMPLETION) == ROW_COLUMNS
assert _FRONT[:2] == KEY_NAMES  # a staged record's key is its first two values


def _shared(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(map(row.get, SHARED_NAMES))


def staged_record(pair: Pair) -> list[Any]:
    """The COPY record of a pair, in one pass (what `staged_row` gives, as a row of values)."""
    decision = pair.decision.row if pair.decision is not None else None
    completion = pair.completion.row if pair.completion is not None else None
    first = decision if decision is not None else completion
    assert first is not None
    own = map(decision.get, _DECISION) if decision is not None else _NO_DECISION
    envoys = map(completion.get, _COMPLETION) if completion is not None else _NO_COMPLETION
    values = [*map(first.get, _FRONT), *own, *envoys]
    if decision is not None and completion is not None:
        values[_COMPLETION_DIFFERS_AT] = (
            None  # nearly always: both halves saw the same facts, one C-level comparison
            if _shared(completion) == _shared(decision)
            else differs(completion, {n: decision.get(n) for n in SHARED_NAMES}, "completion")
        )
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = _json_text(values[at])
    return values


def distinct_key_waves(records: list[list[Any]]) -> list[list[list[Any]]]:
    """The records in waves where no key repeats: each wave is staged and placed on its own.

    A key staged twice (a decision released alone after its hold, then its late completion in
    the same batch) joins its row twice in a fill (UPDATE ... FROM then uses one staged row,
    which one is not defined); each key once per statement keeps every half well placed.
    """
    waves: list[list[list[Any]]] = [[]]
    seen: dict[tuple[Any, Any], int] = {}
    for record in records:
        key = (record[0], record[1])
        times = seen.get(key, 0)
        seen[key] = times + 1
        if times == len(waves):
            waves.append([])
        waves[times].append(record)
    return waves


class Store:
    """One connection as the shipper login; `write` raises UNAVAILABLE errors to retry."""

    def __init__(self, dsn: str, *, timeout: float) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, timeout=self._timeout,
                server_settings={"application_name": "gateway-audit-shipper"},
            )  # fmt: skip
            await self._conn.execute(CREATE_STAGING)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    def drop(self) -> None:
        """Forget the connection after a failure (the next write connects again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def load_states(self) -> dict[SourceKey, SourceState]:
        conn = await self.connect()
        rows = await conn.fetch(
            'SELECT source_kind, source_id, segment, "offset", seq, last_hash, finished, '
            "high_seq FROM gateway_audit_ship_state"
        )
        return {
            (key := SourceKey(r["source_kind"], r["source_id"])): SourceState(
                key,
                Position(r["segment"], r["offset"]),
                r["seq"],
                r["last_hash"],
                r["finished"],
                r["high_seq"],
            )
            for r in rows
        }

    async def write(
        self,
        pairs: Sequence[Pair],
        states: Sequence[SourceState],
        meanwhile: Callable[[], None] | None = None,
    ) -> int:
        """Rows and offsets in one transaction; returns how many rows PostgreSQL refused.

        `meanwhile` runs (at most once) while PostgreSQL executes the batch's INSERT.
        """
        conn = await self.connect()
        records = [staged_record(pair) for pair in pairs]
        async with asyncio.timeout(self._timeout):
            try:
                with refused_rows():
                    async with conn.transaction():
                        for n, wave in enumerate(distinct_key_waves(records)):
                            await self._rows(conn, wave, meanwhile, fresh=n == 0)
                            meanwhile = None
                        await self._states(conn, states)
            except RowsRefusedError as refusal:
                log.warning("audit batch refused (%s); writing it row by row", refusal)
            else:
                return 0
            return await self._one_by_one(conn, pairs, records, states)

    async def _rows(
        self,
        conn: asyncpg.Connection,
        records: list[list[Any]],
        meanwhile: Callable[[], None] | None = None,
        *,
        fresh: bool = False,
    ) -> None:
        """Stage and place `records`; `fresh`: the transaction's first, so the staging table
        is empty (ON COMMIT DELETE ROWS) and needs no TRUNCATE, which costs a new file and a
        catalog update each time (about 1 ms: 3 µs a row in a 300-row batch)."""
        if not fresh:
            await conn.execute(f"TRUNCATE {STAGING}")
        await conn.copy_records_to_table(STAGING, records=records, columns=ROW_COLUMNS)
        inserting = asyncio.ensure_future(conn.fetchval(INSERT_SQL))
        try:
            if meanwhile is not None:
                await asyncio.sleep(0)  # the INSERT goes out; this process works while it runs
                meanwhile()
            inserted = await inserting
        finally:
            # never an INSERT left running on the connection behind the caller's back
            inserting.cancel()
        if inserted < len(records):
            await conn.execute(FILL_COMPLETIONS)
            await conn.execute(FILL_DECISIONS)

    async def _states(self, conn: asyncpg.Connection, states: Sequence[SourceState]) -> None:
        if states:
            await conn.execute(
                STATE_SQL,
                [s.key.kind for s in states], [s.key.id for s in states],
                [s.position.segment for s in states], [s.position.offset for s in states],
                [s.seq for s in states], [s.last_hash for s in states],
                [s.finished for s in states], [s.high_seq for s in states],
            )  # fmt: skip

    async def _one_by_one(
        self,
        conn: asyncpg.Connection,
        pairs: Sequence[Pair],
        records: list[list[Any]],
        states: Sequence[SourceState],
    ) -> int:
        refused = 0
        async with conn.transaction():
            for pair, record in zip(pairs, records, strict=True):
                try:
                    with refused_rows():
                        async with conn.transaction():  # a savepoint per row
                            await self._rows(conn, [record])
                except RowsRefusedError as refusal:
                    refused += 1
                    await self._reject(conn, pair, str(refusal))
            await self._states(conn, states)
        return refused

    async def _reject(self, conn: asyncpg.Connection, pair: Pair, reason: str) -> None:
        for item in pair.items:
            assert item.half is not None
            chain_id, seq_column, _, hash_column = CHAIN_COLUMNS[item.half]
            row = item.row or {}
            log.error("audit row %r refused by PostgreSQL, kept in gateway_audit_rejected: %s",
                      row.get("request_id"), reason)  # fmt: skip
            await conn.execute(
                REJECT_SQL, item.half, str(row.get(chain_id)), int(row.get(seq_column) or 0),
                str(row.get(hash_column)), reason, item.raw,
            )  # fmt: skip
