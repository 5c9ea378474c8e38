"""Rows per second the audit shipper writes into PostgreSQL (`python -m bench.shipper_throughput`).

A backlog of N requests is written first, as the service and Envoy write it: N decisions in
journals (chained, through the real Journal) and N access-log lines (Envoy's format), so
that most rows are a decision and its completion joined (one INSERT each). Then the real
Shipper drains it into a provisioned PostgreSQL (fsync on, as `make up` runs it) with its
default batch size; the time from its first read to its last commit gives rows/s. The
shipper's own CPU (this process) and PostgreSQL's are reported per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from authz_service.audit.check_record import journal_row
from authz_service.audit.envoy_log import completion_of  # noqa: F401 - the format the lines follow
from authz_service.audit.journal import Journal
from authz_service.audit.record import AuditRecord
from authz_service.shipper.run import Shipper, tune_gc
from authz_service.shipper.settings import ShipperSettings
from bench.procstat import cpu_seconds, tree
from devstack.launcher import LaunchSpec, launch

TARGET_ROWS_PER_SECOND = 20_000


def _decision(index: int, now_us: int) -> dict[str, Any]:
    record = AuditRecord(
        request_id=str(uuid.uuid4()), decided_at_us=now_us + index, decision="allow",
        status_code=200, correlation_id=str(uuid.uuid4()), gateway_type="PLANT",
        route_id="orders-list", method="GET", path="/api/v1/orders",
        user_id=f"user-{index % 500}", customer_id=f"cust-{index % 50}", roles=["customer"],
        trial_mode=False, plan="standard",
        opa_decisions={"gateway/authz": {"allow": True, "reason": "allowed", "cached": False}},
        budget_metric="api_calls", budget_cost=1, budget_used=index % 1000, budget_limit=10_000,
        client_ip="127.0.0.1", user_agent="bench/1", authz_latency_ms=0.8,
        config_revision="r" * 64, policy_revision="p" * 64, service_version="0.1.0",
    )  # fmt: skip
    return journal_row(record)


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps({  # as render's log_format names them
        "request_id": row["request_id"], "correlation_id": row["correlation_id"],
        "causation_id": None, "gateway_type": "PLANT", "route_id": "orders-list",
        "method": "GET", "path": "/api/v1/orders", "status_code": 200,
        "response_code_details": "via_upstream", "response_flags": "-",
        "started_at": "2026-11-29T12:00:00.123456Z", "duration_us": 1800,
        "upstream_duration_us": 900, "request_bytes": 0, "response_bytes": 240,
        "upstream_cluster": "backend", "upstream_host": "127.0.0.1:8091",
        "client_ip": "127.0.0.1", "user_agent": "bench/1", "authz_decision": "allow",
    }) + b"\n"  # fmt: skip


async def _backlog(work: Path, rows: int, journals: int) -> Path:
    """Decisions in `journals` journals and their Envoy lines in one access log."""
    now_us = time.time_ns() // 1000
    log = work / "access" / "plant.log"
    log.parent.mkdir(parents=True)
    per_journal = rows // journals
    with log.open("wb") as lines:
        for _ in range(journals):
            journal = Journal(work / "journal", fsync="off", max_bytes=1 << 40)
            await journal.open()
            for index in range(per_journal):
                row = _decision(index, now_us)
                written = journal.record(row)
                lines.write(_line(row))
                if index % 512 == 511 and written is not None:
                    await written
            await journal.close()
    manifest = work / "access_logs.json"
    manifest.write_text(json.dumps({"access_logs": [
        {"name": "plant", "gateway_type": "PLANT", "path": str(log), "admin": None}]}))  # fmt: skip
    return manifest


async def _drain(settings: ShipperSettings, rows: int, postgres_pid: int) -> dict[str, float]:
    shipper = Shipper(settings)
    tune_gc()  # as `audit ship` does
    assert await shipper._start(asyncio.Event())
    cpu, pg_cpu = time.process_time(), cpu_seconds(tree([postgres_pid]))
    started = time.monotonic()
    while shipper.status()["rows_total"] < rows:
        if not await shipper.round(final=False):
            await asyncio.sleep(0.01)
    seconds = time.monotonic() - started
    spent, pg_spent = time.process_time() - cpu, cpu_seconds(tree([postgres_pid])) - pg_cpu
    await shipper.store.close()
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds,
            "shipper_cpu_us_per_row": spent / rows * 1e6,
            "postgres_cpu_us_per_row": pg_spent / rows * 1e6}  # fmt: skip


async def measure(rows: int, journals: int, batch_rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as scratch:
        work = Path(scratch)
        only_postgres = LaunchSpec(
            var_dir=work, build_dir=work, ports={}, components=frozenset({"postgres"}),
            provider="local",
        )  # fmt: skip
        with launch(only_postgres) as launched:
            pg, database = launched.postgres, launched.datastores.database
            assert pg is not None
            assert database is not None
            manifest = await _backlog(work, rows, journals)
            assert pg.pid is not None
            settings = ShipperSettings(
                database_url=database.shipper_dsn, journal_dir=work / "journal",
                access_log_manifest=manifest, health_address="", batch_rows=batch_rows,
                hold_seconds=30,
            )  # fmt: skip
            return await _drain(settings, rows, pg.pid)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shipper_throughput", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--journals", type=int, default=2, help="authz workers' journals")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="AUTHZ_SHIPPER_BATCH_ROWS")
    args = parser.parse_args()
    result = asyncio.run(measure(args.rows, args.journals, args.batch_rows))
    verdict = "met" if result["rows_per_second"] >= TARGET_ROWS_PER_SECOND else "NOT MET"
    print(f"{result['rows_per_second']:,.0f} rows/s into PostgreSQL ({args.rows} joined rows in "
          f"{result['seconds']:.1f} s, batches of {args.batch_rows}); target "
          f"{TARGET_ROWS_PER_SECOND:,}: {verdict}")  # fmt: skip
    print(
        f"CPU per row: shipper {result['shipper_cpu_us_per_row']:.0f} µs, "
        f"PostgreSQL {result['postgres_cpu_us_per_row']:.0f} µs"
    )


if __name__ == "__main__":
    main()
