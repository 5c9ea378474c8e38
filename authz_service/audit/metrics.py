"""Prometheus metrics of the audit trail: written, spooled, dropped, rejected, cleaned."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WRITTEN = Counter("authz_audit_records_written", "Audit entries written to PostgreSQL")
SPOOLED = Counter("authz_audit_records_spooled", "Audit entries written to the on-disk spool")
REPLAYED = Counter("authz_audit_records_replayed", "Spooled audit entries replayed to PostgreSQL")
DROPPED = Counter(
    "authz_audit_records_dropped", "Audit entries lost (full spool, policy drop)", ["reason"]
)
REJECTED = Counter(
    "authz_audit_records_rejected",
    "Audit entries PostgreSQL refused alone; kept in the spool's rejected.jsonl",
)
CLEANED = Counter(
    "authz_audit_values_cleaned", "Audit values changed before storing (NUL, length...)", ["field"]
)
SPOOL_BYTES = Gauge("authz_audit_spool_bytes", "Bytes waiting in the audit spool")
QUEUE_DEPTH = Gauge("authz_audit_queue_depth", "Audit entries waiting in memory")
MERGED = Counter(
    "authz_audit_completions_merged",
    "Access-log completions written in their decision's INSERT: no second write",
)
