"""The shipper's SQL: the staging table, the INSERT that places rows, the fills, the offsets.

Built once from columns.py. Timestamps are staged as integer microseconds and addresses as
text, converted by PostgreSQL (cheaper than a Python object per value).
"""

from __future__ import annotations

from authz_service.audit.columns import (
    DIFFERS_COLUMN,
    KINDS,
    ROW_COLUMNS,
    SHARED_NAMES,
    Half,
    Kind,
    half_columns,
)

TABLE = "gateway_audit_logs"
STAGING = "audit_staging"
_SQL_TYPES: dict[Kind, str] = {
    "text": "text", "int": "bigint", "float": "double precision", "bool": "boolean",
    # microseconds since the epoch: PostgreSQL turns them into timestamps (exact below 2^53 µs,
    # the year 2255), much cheaper than a Python datetime per value; addresses likewise
    "ts": "bigint", "inet": "text", "json": "jsonb", "text[]": "text[]",
}  # fmt: skip


def _value(column: str, source: str = "s") -> str:
    """The staged column as the table's type."""
    kind = KINDS.get(column)
    if kind == "ts":
        return f"'epoch'::timestamptz + {source}.{column} * interval '1 microsecond'"
    if kind == "inet":
        return f"{source}.{column}::inet"
    return f"{source}.{column}"


def _column_type(name: str) -> str:
    if name in KINDS:
        return _SQL_TYPES[KINDS[name]]
    if name.endswith("_differs"):
        return "jsonb"
    return "bigint" if name.endswith("_seq") else "text"  # the chain columns


def _differs_sql(prefix_new: str, prefix_old: str) -> str:
    parts = ", ".join(
        f"'{c}', CASE WHEN {prefix_old}.{c} IS DISTINCT FROM {_value(c, prefix_new)} "
        f"THEN jsonb_build_array({_value(c, prefix_new)}) END"
        for c in SHARED_NAMES
    )
    return f"nullif(jsonb_strip_nulls(jsonb_build_object({parts})), '{{}}'::jsonb)"


def _fill_sql(half: Half, presence: str) -> str:
    """Set a half where the row lacks it (the write-once trigger allows only that)."""
    differs = DIFFERS_COLUMN[half]
    own = [c for c in half_columns(half) if c != differs]
    assignments = ", ".join(f"{c} = {_value(c)}" for c in own)
    computed = _differs_sql("s", "t")
    if half == "completion":  # a merged staged row carries the completion's own differences
        computed = f"CASE WHEN s.decision IS NOT NULL THEN s.{differs} ELSE {computed} END"
    return f"""
UPDATE {TABLE} AS t SET {assignments}, {differs} = {computed}
FROM {STAGING} AS s
WHERE t.request_id = s.request_id AND t.gateway_type IS NOT DISTINCT FROM s.gateway_type
  AND s.{presence} IS NOT NULL AND t.{presence} IS NULL
"""  # noqa: S608 - column names from columns.py, no input


COLUMNS = ", ".join(ROW_COLUMNS)
CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ("
    + ", ".join(f"{c} {_column_type(c)}" for c in ROW_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
# the fills run only when some staged row was not inserted (a late half, or a re-read); they
# join the whole staging table, but a row inserted by this statement already has every half
# its staged row had, so no fill touches it (a key is staged once per statement: store.py)
INSERT_SQL = f"""
WITH inserted AS (
    INSERT INTO {TABLE} ({COLUMNS})
    SELECT {", ".join(_value(c) for c in ROW_COLUMNS)} FROM {STAGING} AS s
    ON CONFLICT (request_id, gateway_type) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""  # noqa: S608 - column names from columns.py, no input
FILL_COMPLETIONS = _fill_sql("completion", "completed_at")
FILL_DECISIONS = _fill_sql("decision", "decision")
STATE_SQL = """
INSERT INTO gateway_audit_ship_state AS s
    (source_kind, source_id, segment, "offset", seq, last_hash, finished, high_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::text[], $7::boolean[], $8::bigint[])
ON CONFLICT (source_kind, source_id) DO UPDATE SET segment = EXCLUDED.segment,
    "offset" = EXCLUDED."offset", seq = EXCLUDED.seq, last_hash = EXCLUDED.last_hash,
    finished = EXCLUDED.finished, high_seq = greatest(s.high_seq, EXCLUDED.high_seq),
    updated_at = now()
"""
REJECT_SQL = """
INSERT INTO gateway_audit_rejected (chain_kind, chain_id, seq, hash, reason, payload)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
"""
