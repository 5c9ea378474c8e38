"""Helpers for the shipper's integration tests: journals and Envoy lines on disk, a shipper."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from authz_service.audit.check_record import journal_row
from authz_service.audit.journal import Journal
from authz_service.audit.record import AuditRecord
from authz_service.audit.verify import Report, verify
from authz_service.shipper.run import Shipper
from authz_service.shipper.settings import ShipperSettings

NOW_US = int(datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp() * 1_000_000)


def decision(request_id: str, **fields: Any) -> dict[str, Any]:
    """A journal row as the servicer makes it (cleaned)."""
    fields.setdefault("gateway_type", "PLANT")
    fields.setdefault("correlation_id", f"corr-{request_id}")
    fields.setdefault("route_id", "orders-list")
    fields.setdefault("method", "GET")
    fields.setdefault("path", "/api/v1/orders")
    fields.setdefault("client_ip", "10.0.0.1")
    fields.setdefault("user_agent", "test/1")
    return journal_row(AuditRecord(request_id, NOW_US, fields.pop("decision", "allow"),
                                   fields.pop("status_code", 200), **fields))  # fmt: skip


def envoy_line(request_id: str, **fields: Any) -> bytes:
    """One access-log line in the fields render asks Envoy for."""
    line = {
        "request_id": request_id, "correlation_id": f"corr-{request_id}", "causation_id": None,
        "gateway_type": "PLANT", "route_id": "orders-list", "method": "GET",
        "path": "/api/v1/orders", "status_code": 200, "response_code_details": "via_upstream",
        "response_flags": "-", "started_at": "2026-11-29T12:00:00.123456Z",
        "duration_us": 1500, "request_bytes": 0, "response_bytes": 120,
        "upstream_cluster": "backend", "upstream_host": "127.0.0.1:8091",
        "client_ip": "10.0.0.1", "user_agent": "test/1", "authz_decision": "allow",
    }  # fmt: skip
    line.update(fields)
    return orjson.dumps(line) + b"\n"


async def journal(root: Path, rows: list[dict[str, Any]]) -> Journal:
    """An open journal holding `rows` (the caller closes it, or not: a live writer)."""
    opened = Journal(root, fsync="off")
    await opened.open()
    for row in rows:
        written = opened.record(row)
        assert written is not None
        await written
    return opened


def manifest(directory: Path, logs: dict[str, Path]) -> Path:
    path = directory / "access_logs.json"
    entries = [{"name": n, "gateway_type": n.upper(), "path": str(p), "admin": None}
               for n, p in logs.items()]  # fmt: skip
    path.write_bytes(orjson.dumps({"access_logs": entries}))
    return path


def shipper(dsn: str, root: Path, manifest_path: Path | None = None, **extra: Any) -> Shipper:
    settings = ShipperSettings(
        database_url=dsn, journal_dir=root, access_log_manifest=manifest_path,
        health_address="", hold_seconds=extra.pop("hold_seconds", 0), **extra,
    )  # fmt: skip
    return Shipper(settings)


async def ship_all(instance: Shipper, rounds: int = 10) -> None:
    """Start and run rounds until one finds nothing to do (bounded), then disconnect."""
    assert await instance._start(asyncio.Event())
    try:
        for _ in range(rounds):
            if not await instance.round(final=False):
                return
        raise AssertionError(f"still shipping after {rounds} rounds")
    finally:
        await instance.store.close()


def rows(dsn: str, where: str = "true") -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            f"SELECT * FROM gateway_audit_logs WHERE {where} ORDER BY id"
        ).fetchall()


async def findings(reader_dsn: str) -> list[str]:
    report: Report = await verify(reader_dsn)
    return report.findings
