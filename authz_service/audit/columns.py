"""The audit row's columns by owner (decision, completion, both) and kind: one list for all users.

The journal, the shipper's COPY, the hash chain and `audit verify` all read these tuples, so a
column added here is written, chained and verified alike (and needs a migration).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["text", "int", "float", "bool", "ts", "inet", "json", "text[]"]

# the row's key: a request at one hop (Envoy makes a new x-request-id at every hop)
KEY: tuple[tuple[str, Kind], ...] = (("request_id", "text"), ("gateway_type", "text"))
# facts both halves carry (the decision from the CheckRequest, Envoy from its access log);
# the half that arrives first sets them, the other's values are kept in <half>_differs when
# they are not the same (so each half's hash can be recomputed from the row)
SHARED: tuple[tuple[str, Kind], ...] = (
    ("correlation_id", "text"), ("causation_id", "text"), ("route_id", "text"),
    ("method", "text"), ("path", "text"), ("client_ip", "inet"), ("user_agent", "text"),
)  # fmt: skip
DECISION: tuple[tuple[str, Kind], ...] = (
    ("decided_at", "ts"), ("decision", "text"), ("authz_status_code", "int"),
    ("denied_stage", "text"), ("problem_type", "text"), ("user_id", "text"),
    ("customer_id", "text"), ("roles", "text[]"), ("trial_mode", "bool"), ("plan", "text"),
    ("opa_decisions", "json"), ("budget_metric", "text"), ("budget_cost", "int"),
    ("budget_used", "int"), ("budget_limit", "int"), ("authz_latency_ms", "float"),
    ("config_revision", "text"), ("policy_revision", "text"), ("service_version", "text"),
    ("shadow_denials", "text[]"),
)  # fmt: skip
COMPLETION: tuple[tuple[str, Kind], ...] = (
    ("status_code", "int"), ("response_code_details", "text"), ("response_flags", "text"),
    ("total_duration_ms", "float"), ("request_bytes", "int"), ("response_bytes", "int"),
    ("upstream_cluster", "text"), ("upstream_host", "text"), ("started_at", "ts"),
    ("completed_at", "ts"), ("authz_consulted", "bool"),
)  # fmt: skip

Half = Literal["decision", "completion"]
# per half: the chain it belongs to (a journal, or one Envoy access-log stream)
CHAIN_COLUMNS: dict[Half, tuple[str, str, str, str]] = {
    "decision": ("journal_id", "journal_seq", "journal_prev_hash", "journal_hash"),
    "completion": ("access_log_id", "access_log_seq", "access_log_prev_hash", "access_log_hash"),
}
DIFFERS_COLUMN: dict[Half, str] = {
    "decision": "decision_differs",
    "completion": "completion_differs",
}
OWN_COLUMNS: dict[Half, tuple[tuple[str, Kind], ...]] = {
    "decision": DECISION,
    "completion": COMPLETION,
}
# the column whose value says the half is present in a row (never NULL when it is)
PRESENCE_COLUMN: dict[Half, str] = {"decision": "decision", "completion": "completed_at"}


def hashed_columns(half: Half) -> tuple[tuple[str, Kind], ...]:
    """What a half's hash covers besides its chain link: the key, the shared facts, its own."""
    return KEY + SHARED + OWN_COLUMNS[half]


def half_columns(half: Half) -> tuple[str, ...]:
    """Every column a half writes: hashed ones (but the key and shared), its chain, its diff."""
    return (
        *(name for name, _ in OWN_COLUMNS[half]),
        *CHAIN_COLUMNS[half],
        DIFFERS_COLUMN[half],
    )


SHARED_NAMES = tuple(name for name, _ in SHARED)
KEY_NAMES = tuple(name for name, _ in KEY)
# every column the shipper inserts (created_at and id are the server's)
ROW_COLUMNS: tuple[str, ...] = (
    *KEY_NAMES,
    *SHARED_NAMES,
    *half_columns("decision"),
    *half_columns("completion"),
)
KINDS: dict[str, Kind] = dict(KEY + SHARED + DECISION + COMPLETION)
