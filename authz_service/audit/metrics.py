"""Prometheus metrics of the service's audit journal: batches, records, bytes, errors, drops."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

JOURNAL_BATCHES = Counter(
    "authz_audit_journal_batches", "Journal writes (one os.write per batch of records)"
)
JOURNAL_RECORDS = Counter("authz_audit_journal_records", "Records written to the journal")
JOURNAL_ERRORS = Counter(
    "authz_audit_journal_errors", "Journal writes or syncs that failed (checks were refused)"
)
JOURNAL_BYTES = Gauge(
    "authz_audit_journal_bytes",
    "Bytes of journal segments not yet removed by the shipper (all journals under the root)",
)
DROPPED = Counter(
    "authz_audit_records_dropped",
    "Records not journaled: refusals past the journal's hard limit (journal_full), "
    "records that cannot be encoded (unencodable)",
    ["reason"],
)
CANCELLED = Counter(
    "authz_audit_checks_cancelled", "Checks cancelled by Envoy (timeout, client gone), journaled"
)
CLEANED = Counter(
    "authz_audit_values_cleaned", "Audit values changed before storing (NUL, length...)", ["field"]
)
