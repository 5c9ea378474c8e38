"""`python -m authz_service audit verify`: recompute every chain from the stored rows.

Read-only (the gateway_audit_admin role is enough). Each half of each row is hashed again from
what PostgreSQL returns; a mismatch is an edited row. Per chain, a missing sequence number
that retention did not remove and PostgreSQL did not refuse is a deleted row; a row that does
not follow its predecessor, a chain the shipper never wrote, rows past the shipped end, or a
half without chain columns is an inserted row. Limits: authz_service/audit/README.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from authz_service.audit.chain import GENESIS, record_hash
from authz_service.audit.columns import (
    CHAIN_COLUMNS,
    DIFFERS_COLUMN,
    SHARED_NAMES,
    Half,
    hashed_columns,
)
from authz_service.settings import load_prefixed

ENV_PREFIX = "AUTHZ_VERIFY_"
CHAIN_KIND: dict[Half, str] = {"decision": "journal", "completion": "access_log"}
FETCH = 5000


class VerifySettings(BaseSettings):
    """AUTHZ_VERIFY_DATABASE_URL: a login in gateway_audit_admin (reads every row)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    database_url: str = Field(min_length=1, description="PostgreSQL as a reader (admin) login.")


def load_verify_settings() -> VerifySettings:
    return load_prefixed(VerifySettings, ENV_PREFIX)


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    checked: dict[Half, int] = field(default_factory=lambda: {"decision": 0, "completion": 0})
    chains: dict[Half, int] = field(default_factory=lambda: {"decision": 0, "completion": 0})

    def summary(self) -> str:
        return (
            f"audit verify: {self.checked['decision']} decisions in "
            f"{self.chains['decision']} journals, {self.checked['completion']} completions in "
            f"{self.chains['completion']} access-log streams; {len(self.findings)} findings"
        )


@dataclass
class _Known:
    """What the shipper and retention recorded about each chain."""

    shipped: dict[tuple[str, str], int]  # every record up to this one is written
    written: dict[tuple[str, str], int]  # the highest record written
    retired: dict[tuple[str, str], int]
    rejected: dict[tuple[str, str], set[int]]
    last_legacy_id: int


def _describe(row: Mapping[str, Any] | asyncpg.Record) -> str:
    key = f"request_id={row['request_id']!r}, gateway_type={row['gateway_type']!r}"
    return f"row id={row['id']} ({key})"


def _effective(half: Half, row: Mapping[str, Any] | asyncpg.Record) -> dict[str, Any]:
    """The half's own values: the row's, with its own view of the shared facts put back."""
    values = dict(row)
    for name, (value,) in (row[DIFFERS_COLUMN[half]] or {}).items():
        if name in SHARED_NAMES:
            values[name] = value
    return values


def _ranges(numbers: list[int]) -> str:
    spans, start = [], numbers[0]
    for previous, current in zip(numbers, [*numbers[1:], None], strict=True):
        if current != previous + 1:
            spans.append(str(start) if start == previous else f"{start}..{previous}")
            start = current if current is not None else start
    return ", ".join(spans)


class _ChainCheck:
    """The rows of one chain, in sequence order."""

    def __init__(self, half: Half, chain_id: str, known: _Known, report: Report) -> None:
        self.half, self.chain_id, self.known, self.report = half, chain_id, known, report
        self.key = (CHAIN_KIND[half], chain_id)
        self.retired = known.retired.get(self.key, 0)
        self.previous: Mapping[str, Any] | asyncpg.Record | None = None
        self.last_seq = self.retired
        report.chains[half] += 1
        if self.key not in known.shipped:
            report.findings.append(f"inserted: {half} chain {chain_id!r} was never shipped")

    def where(self, seq: int) -> str:
        return f"{self.half} chain {self.chain_id!r} seq {seq}"

    def gap(self, first: int, last: int) -> None:
        """Report what is missing of first..last (up to the shipped prefix: past it, records
        can still be on their way)."""
        last = min(last, self.known.shipped.get(self.key, last))
        accounted = self.known.rejected.get(self.key, set())
        missing = [s for s in range(max(first, self.retired + 1), last + 1) if s not in accounted]
        if missing:
            self.report.findings.append(
                f"deleted: {self.half} chain {self.chain_id!r} seq {_ranges(missing)} missing"
            )

    def add(self, row: Mapping[str, Any] | asyncpg.Record) -> None:
        _, seq_column, prev_column, hash_column = CHAIN_COLUMNS[self.half]
        seq, prev, stored = row[seq_column], row[prev_column], row[hash_column]
        self.report.checked[self.half] += 1
        digest = record_hash(self.half, _effective(self.half, row), self.chain_id, seq, prev)
        edited = digest != stored
        if edited:
            self.report.findings.append(f"edited: {_describe(row)}: {self.where(seq)}")
        before = self.previous
        if before is not None and before[seq_column] == seq - 1:
            # both consistent in themselves, yet not linked: the predecessor is not the record
            # this one was written after (replaced whole, its hash recomputed)
            if prev != before[hash_column] and not edited:
                self.report.findings.append(
                    f"inserted: {_describe(before)}: {self.where(seq - 1)} replaces the record "
                    f"seq {seq} follows"
                )
        else:
            self.gap(before[seq_column] + 1 if before else 1, seq - 1)
            if seq == 1 and prev != GENESIS:
                self.report.findings.append(
                    f"inserted: {_describe(row)}: {self.where(seq)} starts no chain"
                )
        self.previous, self.last_seq = row, max(self.last_seq, seq)

    def end(self) -> None:
        shipped = self.known.shipped.get(self.key)
        if shipped is None:
            return
        if self.last_seq < shipped:
            self.gap(self.last_seq + 1, shipped)
        written = self.known.written[self.key]
        if self.last_seq > written:
            self.report.findings.append(
                f"inserted: {self.half} chain {self.chain_id!r} has seq up to {self.last_seq}, "
                f"the shipper wrote up to {written}"
            )


async def _known(conn: asyncpg.Connection) -> _Known:
    state = await conn.fetch(
        "SELECT source_kind, source_id, seq, high_seq FROM gateway_audit_ship_state"
    )
    shipped = {(r[0], r[1]): r[2] for r in state}
    written = {(r[0], r[1]): max(r[2], r[3]) for r in state}
    retired = {(r[0], r[1]): r[2] for r in await conn.fetch(
        "SELECT chain_kind, chain_id, max_seq FROM gateway_audit_chain_retired")}  # fmt: skip
    rejected: dict[tuple[str, str], set[int]] = {}
    for r in await conn.fetch("SELECT chain_kind, chain_id, seq FROM gateway_audit_rejected"):
        kind = CHAIN_KIND.get(r[0], r[0])  # stored by half name
        rejected.setdefault((kind, r[1]), set()).add(r[2])
    legacy = await conn.fetchval("SELECT last_legacy_id FROM gateway_audit_chain_epoch")
    return _Known(shipped, written, retired, rejected, int(legacy or 0))


async def _rows(conn: asyncpg.Connection, half: Half) -> AsyncIterator[asyncpg.Record]:
    id_column, seq_column, prev_column, hash_column = CHAIN_COLUMNS[half]
    columns = ["id", *(n for n, _ in hashed_columns(half)), DIFFERS_COLUMN[half],
               id_column, seq_column, prev_column, hash_column]  # fmt: skip
    query = (
        f"SELECT {', '.join(dict.fromkeys(columns))} FROM gateway_audit_logs "  # noqa: S608
        f"WHERE {id_column} IS NOT NULL ORDER BY {id_column}, {seq_column}"
    )
    async for row in conn.cursor(query, prefetch=FETCH):
        yield row


async def _check_half(conn: asyncpg.Connection, half: Half, known: _Known, report: Report) -> None:
    id_column = CHAIN_COLUMNS[half][0]
    chain: _ChainCheck | None = None
    seen: set[str] = set()
    async for row in _rows(conn, half):
        if chain is None or chain.chain_id != row[id_column]:
            if chain is not None:
                chain.end()
            chain = _ChainCheck(half, row[id_column], known, report)
            seen.add(chain.chain_id)
        chain.add(row)
    if chain is not None:
        chain.end()
    for kind, chain_id in sorted(known.shipped):  # shipped chains with no row left at all
        if kind == CHAIN_KIND[half] and chain_id not in seen:
            _ChainCheck(half, chain_id, known, report).end()


async def _unchained(conn: asyncpg.Connection, known: _Known, report: Report) -> None:
    rows = await conn.fetch(
        "SELECT id, request_id, gateway_type, journal_hash IS NULL AS no_decision_chain "
        "FROM gateway_audit_logs WHERE id > $1 AND ((decision IS NOT NULL AND journal_hash IS "
        "NULL) OR (completed_at IS NOT NULL AND access_log_hash IS NULL)) ORDER BY id",
        known.last_legacy_id,
    )
    for row in rows:
        half = "decision" if row["no_decision_chain"] else "completion"
        report.findings.append(f"inserted: {_describe(row)}: a {half} outside any chain")


async def verify(dsn: str) -> Report:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "gateway-audit-verify"})
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        report = Report()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            known = await _known(conn)  # the same snapshot as the rows
            halves: tuple[Half, ...] = ("decision", "completion")
            for half in halves:
                await _check_half(conn, half, known, report)
            await _unchained(conn, known, report)
        return report
    finally:
        await conn.close()
