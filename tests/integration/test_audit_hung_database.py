"""A hung PostgreSQL (the real server, paused) during shutdown: the batch in hand is spooled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz_service.audit.record import AuditRecord
from authz_service.audit.spool import Spool
from authz_service.audit.writer import AuditWriter
from devstack import PostgresService, provision_postgres


@pytest.fixture
def hung_postgres(tmp_path: Path) -> Iterator[PostgresService]:
    """A paused PostgreSQL (every process frozen): connections are accepted by the kernel only."""
    with provision_postgres(tmp_path / "pg", fsync=False) as pg:
        pg.pause()
        try:
            yield pg
        finally:
            pg.resume()


async def test_stop_spools_the_batch_it_was_delivering(
    tmp_path: Path, hung_postgres: PostgresService
) -> None:
    spool_dir = tmp_path / "spool"
    writer = AuditWriter(
        hung_postgres.dsn, spool_dir, flush_interval=0.05, retention_interval=None,
        write_timeout=3.0,
    )  # fmt: skip
    await writer.start()
    ids = [f"hung-{i}" for i in range(10)]
    for request_id in ids:
        writer.submit(AuditRecord(request_id, datetime.now(UTC), "allow", 200))
    await asyncio.sleep(0.3)  # the writer now waits on the hung server with the batch in hand
    await writer.stop(grace=0.5)
    spool = Spool(spool_dir, 1 << 20)
    spooled = [entry for segment in spool.segments() for entry in spool.read(segment)]
    found = {request_id for request_id in ids if any(request_id in str(e) for e in spooled)}
    assert found == set(ids), f"lost on shutdown: {sorted(set(ids) - found)}"
