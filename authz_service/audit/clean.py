"""Turns audit records into rows PostgreSQL accepts, cleaning what it cannot hold and saying so."""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from authz_service.audit.metrics import CLEANED
from authz_service.audit.record import AccessLogCompletion, AuditRecord

log = logging.getLogger(__name__)

Row = dict[str, Any]

# btree entries must stay under ~2700 bytes; 512 characters is at most 2 KB of UTF-8
INDEXED_TEXT_MAX = 512
# other text is stored verbatim up to this length (an 8 KB user agent fits whole)
TEXT_MAX = 65536
DECISIONS = frozenset({"allow", "deny", "error"})
SMALLINT = (-(2**15), 2**15 - 1)
INTEGER = (-(2**31), 2**31 - 1)
BIGINT = (-(2**63), 2**63 - 1)

INDEXED_TEXT = (
    "request_id", "correlation_id", "causation_id", "gateway_type", "route_id",
    "denied_stage", "problem_type", "user_id", "customer_id",
)  # fmt: skip
PLAIN_TEXT = (
    "method", "path", "plan", "user_agent", "config_revision", "policy_revision", "service_version",
)  # fmt: skip


@dataclass(slots=True)
class Cleaner:
    """Collects what was changed in one record, for one log line and the metric."""

    request_id: str
    changes: list[str] = field(default_factory=list)

    def note(self, column: str, what: str) -> None:
        self.changes.append(f"{column}: {what}")
        CLEANED.labels(field=column).inc()

    def text(self, column: str, value: str | None, limit: int = TEXT_MAX) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.note(column, f"not text ({type(value).__name__}), converted")
            value = str(value)
        if "\x00" in value:
            self.note(column, f"removed {value.count(chr(0))} NUL character(s)")
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.note(column, "replaced invalid UTF-8 (lone surrogates) with U+FFFD")
            value = _replace_surrogates(value)
        if len(value) > limit:
            self.note(column, f"truncated from {len(value)} to {limit} characters")
            value = value[:limit]
        return value

    def integer(self, column: str, value: int | None, bounds: tuple[int, int]) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.note(column, f"not an integer ({value!r:.40}), dropped")
            return None
        if not bounds[0] <= value <= bounds[1]:
            self.note(column, f"{value} out of range, dropped")
            return None
        return value

    def number(self, column: str, value: float | None) -> float | None:
        if value is None:
            return None
        if not isinstance(value, int | float) or not math.isfinite(value):
            self.note(column, f"not a finite number ({value!r:.40}), dropped")
            return None
        return float(value)

    def address(self, column: str, value: str | None) -> str | None:
        text = self.text(column, value, INDEXED_TEXT_MAX)
        if not text:
            return None
        parsed = _parse_ip(text)
        if parsed is None:
            self.note(column, f"not an IP address ({text!r:.60}), dropped")
        return parsed

    def json(self, column: str, value: Any, depth: int = 0) -> Any:
        """JSON-safe copy: no NUL (jsonb refuses \\u0000), valid UTF-8, 64-bit ints, str keys."""
        if depth > 64:
            self.note(column, "nested deeper than 64 levels, cut")
            return None
        if isinstance(value, dict):
            return {
                self.text(column, str(k), TEXT_MAX): self.json(column, v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.json(column, v, depth + 1) for v in value]
        return self._json_scalar(column, value)

    def _json_scalar(self, column: str, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(column, value, TEXT_MAX)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if BIGINT[0] <= value <= BIGINT[1] else str(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        self.note(column, f"{type(value).__name__} stored as text")
        return self.text(column, str(value))

    def log(self) -> None:
        if self.changes:
            log.warning(
                "audit record %r cleaned before storing: %s",
                self.request_id[:INDEXED_TEXT_MAX],
                "; ".join(self.changes),
            )


def _replace_surrogates(value: str) -> str:
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)


def _parse_ip(text: str) -> str | None:
    candidates = [text]
    if text.startswith("[") and "]" in text:  # [::1]:443
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:  # 10.0.0.1:443
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # the pipeline's clock is UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def decision_row(record: AuditRecord) -> Row:
    """The columns the pipeline's decision sets, keyed by column name, JSON-ready."""
    clean = Cleaner(str(record.request_id))
    row: Row = {c: clean.text(c, getattr(record, c), INDEXED_TEXT_MAX) for c in INDEXED_TEXT}
    row |= {c: clean.text(c, getattr(record, c)) for c in PLAIN_TEXT}
    decision = row_decision = clean.text("decision", record.decision, INDEXED_TEXT_MAX)
    if decision not in DECISIONS:
        clean.note("decision", f"unknown decision {decision!r:.40} stored as 'error'")
        row_decision = "error"
    row |= {
        "created_at": _timestamp(record.created_at) or datetime.now(UTC).isoformat(),
        "decision": row_decision,
        "authz_status_code": clean.integer("authz_status_code", record.status_code, SMALLINT),
        "roles": [clean.text("roles", r, INDEXED_TEXT_MAX) for r in record.roles],
        "shadow_denials": [clean.text("shadow_denials", s) for s in record.shadow_denials],
        "trial_mode": record.trial_mode if isinstance(record.trial_mode, bool) else None,
        "opa_decisions": clean.json("opa_decisions", record.opa_decisions),
        "budget_metric": clean.text("budget_metric", record.budget_metric, INDEXED_TEXT_MAX),
        "budget_cost": clean.integer("budget_cost", record.budget_cost, INTEGER),
        "budget_used": clean.integer("budget_used", record.budget_used, BIGINT),
        "budget_limit": clean.integer("budget_limit", record.budget_limit, BIGINT),
        "client_ip": clean.address("client_ip", record.client_ip),
        "authz_latency_ms": clean.number("authz_latency_ms", record.authz_latency_ms),
    }
    clean.log()
    return row


def completion_row(completion: AccessLogCompletion) -> Row:
    """The columns Envoy's access log sets, keyed by column name, JSON-ready."""
    clean = Cleaner(str(completion.request_id))
    row: Row = {
        "request_id": clean.text("request_id", completion.request_id, INDEXED_TEXT_MAX),
        "created_at": _timestamp(completion.started_at),
        "status_code": clean.integer("status_code", completion.status_code, SMALLINT),
        "total_duration_ms": clean.number("total_duration_ms", completion.total_duration_ms),
        "request_bytes": clean.integer("request_bytes", completion.request_bytes, BIGINT),
        "response_bytes": clean.integer("response_bytes", completion.response_bytes, BIGINT),
        "upstream_cluster": clean.text("upstream_cluster", completion.upstream_cluster),
        "response_flags": clean.text("response_flags", completion.response_flags),
        "completed_at": _timestamp(completion.completed_at) or datetime.now(UTC).isoformat(),
    }
    clean.log()
    return row
