"""Prometheus metrics of the audit shipper: rows, batches, errors, backlog, lag, damage."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter(
    "authz_shipper_rows",
    "Rows written: a decision and its completion in one row (merged), or a half alone",
    ["half"],
)
BATCHES = Counter("authz_shipper_batches", "Transactions committed (rows and offsets together)")
BATCH_SECONDS = Histogram(
    "authz_shipper_batch_seconds",
    "Time to write one batch (COPY, INSERT, completing UPDATEs, offsets, commit)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter(
    "authz_shipper_errors",
    "Failures by kind: unavailable (PostgreSQL away; retried), rejected (a row PostgreSQL "
    "refused, kept in gateway_audit_rejected), rotation (an access log could not be rotated)",
    ["kind"],
)
DAMAGED = Counter(
    "authz_shipper_damaged",
    "Unreadable parts of a source, skipped and logged with file and offset: torn tails, "
    "checksum mismatches, unreadable records or lines",
    ["source", "reason"],
)
DAMAGED_BYTES = Counter("authz_shipper_damaged_bytes", "Bytes skipped as unreadable", ["source"])
BACKLOG_BYTES = Gauge(
    "authz_shipper_backlog_bytes", "Journal and access-log bytes not yet in PostgreSQL"
)
OLDEST_AGE = Gauge(
    "authz_shipper_oldest_unshipped_age_seconds",
    "Age of the oldest record read but not yet in PostgreSQL (0 when there is none)",
)
LAG = Gauge(
    "authz_shipper_lag_seconds",
    "How far behind real time the last committed batch was (its newest record's age)",
)
ROWS_PER_SECOND = Gauge("authz_shipper_rows_per_second", "Rows written per second, last 10 s")
DATABASE_UP = Gauge("authz_shipper_database_up", "1 while the last write to PostgreSQL worked")
