"""Turns audit records into rows PostgreSQL accepts, cleaning what it cannot hold and saying so."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz_service.audit.metrics import CLEANED
from authz_service.audit.record import AuditRecord

log = logging.getLogger(__name__)

Row = dict[str, Any]

# btree entries must stay under ~2700 bytes; 512 characters is at most 2 KB of UTF-8
INDEXED_TEXT_MAX = 512
# other text is stored verbatim up to this length (an 8 KB user agent fits whole)
TEXT_MAX = 65536
DECISIONS = frozenset({"allow", "deny", "error", "cancelled"})
SMALLINT = (-(2**15), 2**15 - 1)
INTEGER = (-(2**31), 2**31 - 1)
BIGINT = (-(2**63), 2**63 - 1)

INDEXED_TEXT = (
    "request_id", "correlation_id", "causation_id", "gateway_type", "route_id",
    "denied_stage", "problem_type", "user_id", "customer_id", "budget_metric", "decision",
)  # fmt: skip
PLAIN_TEXT = (
    "method", "path", "plan", "user_agent", "config_revision", "policy_revision", "service_version",
)  # fmt: skip
# one C call reads all of them from a record
_indexed_text = operator.attrgetter(*INDEXED_TEXT)
_plain_text = operator.attrgetter(*PLAIN_TEXT)


@dataclass(slots=True)
class Cleaner:
    """Collects what was changed in one record, for one log line and the metric."""

    request_id: str
    changes: list[str] = field(default_factory=list)

    def note(self, column: str, what: str) -> None:
        self.changes.append(f"{column}: {what}")
        CLEANED.labels(field=column).inc()

    def text(self, column: str, value: str | None, limit: int = TEXT_MAX) -> str | None:
        if type(value) is str and _plain(value, limit):
            return value
        if value is None:
            return None
        return self._unusual_text(column, value, limit)

    def _unusual_text(self, column: str, value: object, limit: int) -> str:
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
        if value is None or (type(value) is int and bounds[0] <= value <= bounds[1]):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.note(column, f"not an integer ({value!r:.40}), dropped")
            return None
        if not bounds[0] <= value <= bounds[1]:
            self.note(column, f"{value} out of range, dropped")
            return None
        return value

    def number(self, column: str, value: float | None) -> float | None:
        if value is None or (type(value) is float and math.isfinite(value)):
            return value
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
        if depth == 0 and _plain_json(value, 0):
            return value  # already storable: no copy needed
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


def _plain(text: str, limit: int) -> bool:
    """Text stored as it is: nearly every value (isascii() and len() are O(1))."""
    return text.isascii() and len(text) <= limit and "\x00" not in text


def _plain_json(value: Any, depth: int) -> bool:
    """True when `json` would return an equal value: nothing in it needs cleaning."""
    kind = type(value)
    if kind is str:
        return _plain(value, TEXT_MAX)
    if kind is dict:
        return depth < 64 and _plain_object(value, depth)
    if kind is list:
        return depth < 64 and all(_plain_json(v, depth + 1) for v in value)
    if kind is int:
        return bool(BIGINT[0] <= value <= BIGINT[1])
    # tuples and other types go the slow way, which converts them
    return value is None or kind is bool or (kind is float and math.isfinite(value))


def _plain_object(value: dict[Any, Any], depth: int) -> bool:
    """A loop, not all() over a generator: every check's policy decisions pass here."""
    for key, item in value.items():
        if type(key) is not str or not _plain(key, TEXT_MAX):
            return False
        if not _plain_json(item, depth + 1):
            return False
    return True


def _plain_texts(values: Sequence[Any], limit: int) -> bool:
    """True when every value is None or text that `Cleaner.text` would keep as it is."""
    present = [v for v in values if v is not None]
    try:
        joined = "".join(present)  # one C pass instead of one Python call per value
    except TypeError:  # something is not text
        return False
    if not joined.isascii() or "\x00" in joined:
        return False
    return len(joined) <= limit or max(map(len, present)) <= limit


def _texts(clean: Cleaner, columns: tuple[str, ...], values: tuple[Any, ...], limit: int) -> Row:
    if _plain_texts(values, limit):
        return dict(zip(columns, values, strict=True))
    return {c: clean.text(c, v, limit) for c, v in zip(columns, values, strict=True)}


@functools.lru_cache(maxsize=4096)  # a few client addresses send most requests
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


def decision_row(record: AuditRecord) -> Row:
    """The columns the pipeline's decision sets, keyed by column name, JSON-ready."""
    clean = Cleaner(str(record.request_id))
    row = _texts(clean, INDEXED_TEXT, _indexed_text(record), INDEXED_TEXT_MAX)
    row |= _texts(clean, PLAIN_TEXT, _plain_text(record), TEXT_MAX)
    if row["decision"] not in DECISIONS:
        clean.note("decision", f"unknown decision {row['decision']!r:.40} stored as 'error'")
        row["decision"] = "error"
    roles, shadow = record.roles, record.shadow_denials
    row |= {
        "decided_at": record.decided_at_us,
        "authz_status_code": clean.integer("authz_status_code", record.status_code, SMALLINT),
        "roles": list(roles) if _plain_texts(roles, INDEXED_TEXT_MAX)
        else [clean.text("roles", r, INDEXED_TEXT_MAX) for r in roles],
        "shadow_denials": list(shadow) if _plain_texts(shadow, TEXT_MAX)
        else [clean.text("shadow_denials", s) for s in shadow],
        "trial_mode": record.trial_mode if isinstance(record.trial_mode, bool) else None,
        "opa_decisions": clean.json("opa_decisions", record.opa_decisions),
        "budget_cost": clean.integer("budget_cost", record.budget_cost, INTEGER),
        "budget_used": clean.integer("budget_used", record.budget_used, BIGINT),
        "budget_limit": clean.integer("budget_limit", record.budget_limit, BIGINT),
        "client_ip": clean.address("client_ip", record.client_ip),
        "authz_latency_ms": clean.number("authz_latency_ms", record.authz_latency_ms),
    }  # fmt: skip
    clean.log()
    return row


COMPLETION_INDEXED_TEXT = (
    "request_id",
    "gateway_type",
    "correlation_id",
    "causation_id",
    "route_id",
)
COMPLETION_TEXT = ("method", "path", "user_agent", "response_code_details", "response_flags",
                   "upstream_cluster", "upstream_host")  # fmt: skip
COMPLETION_INTEGERS = (("status_code", SMALLINT), ("request_bytes", BIGINT),
                       ("response_bytes", BIGINT))  # fmt: skip


def completion_row(fields: Mapping[str, Any]) -> Row:
    """The columns Envoy's access-log line sets (already parsed), made storable."""
    clean = Cleaner(str(fields.get("request_id")))
    get = fields.get
    row = _texts(clean, COMPLETION_INDEXED_TEXT, tuple(map(get, COMPLETION_INDEXED_TEXT)),
                 INDEXED_TEXT_MAX)  # fmt: skip
    row |= _texts(clean, COMPLETION_TEXT, tuple(map(get, COMPLETION_TEXT)), TEXT_MAX)
    row |= {c: clean.integer(c, fields.get(c), bounds) for c, bounds in COMPLETION_INTEGERS}
    consulted = fields.get("authz_consulted")
    row |= {
        "client_ip": clean.address("client_ip", fields.get("client_ip")),
        "total_duration_ms": clean.number("total_duration_ms", fields.get("total_duration_ms")),
        "started_at": clean.integer("started_at", fields.get("started_at"), BIGINT),
        "completed_at": clean.integer("completed_at", fields.get("completed_at"), BIGINT),
        "authz_consulted": consulted if isinstance(consulted, bool) else None,
    }
    clean.log()
    return row
