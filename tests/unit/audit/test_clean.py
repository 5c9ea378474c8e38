"""Cleaning audit records into rows PostgreSQL accepts."""

from __future__ import annotations

import orjson
import pytest

from authz_service.audit.clean import INDEXED_TEXT_MAX, completion_row, decision_row
from authz_service.audit.record import AuditRecord

DECIDED_AT = 1_735_787_045_000_000  # 2025-01-02T03:04:05Z in microseconds


def _record(**fields: object) -> AuditRecord:
    return AuditRecord("req-1", DECIDED_AT, "allow", 200, **fields)  # type: ignore[arg-type]


def test_hostile_but_valid_text_is_kept_verbatim(caplog: pytest.LogCaptureFixture) -> None:
    hostile = "'; DROP TABLE gateway_audit_logs; -- 🚀 Ünï" * 300
    row = decision_row(_record(user_agent=hostile, path=hostile))
    assert row["user_agent"] == hostile
    assert row["path"] == hostile
    assert caplog.records == []


def test_nul_characters_are_removed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    row = decision_row(_record(user_agent="a\x00b\x00", roles=["x\x00"],
                               opa_decisions={"k\x00": ["v\x00"]}))  # fmt: skip
    assert (row["user_agent"], row["roles"], row["opa_decisions"]) == ("ab", ["x"], {"k": ["v"]})
    message = caplog.records[0].getMessage()
    assert "'req-1'" in message
    assert "user_agent: removed 2 NUL" in message


def test_lone_surrogates_become_replacement_characters() -> None:
    row = decision_row(_record(user_agent="bad\udcff"))
    assert row["user_agent"] == "bad\ufffd"
    orjson.dumps(row)  # serialisable for the journal and jsonb


def test_indexed_text_is_capped_below_the_btree_limit() -> None:
    row = decision_row(_record(user_id="u" * 10_000, user_agent="a" * 10_000))
    assert len(row["user_id"]) == INDEXED_TEXT_MAX
    assert len(row["user_agent"]) == 10_000


@pytest.mark.parametrize(
    ("given", "stored"),
    [("10.1.2.3", "10.1.2.3"), ("10.1.2.3:443", "10.1.2.3"), ("[::1]:80", "::1"),
     ("2001:db8::1", "2001:db8::1"), ("not an ip", None), ("", None)],
)  # fmt: skip
def test_client_ip_is_an_address_or_null(given: str, stored: str | None) -> None:
    assert decision_row(_record(client_ip=given))["client_ip"] == stored


def test_out_of_range_numbers_are_dropped() -> None:
    row = decision_row(_record(budget_cost=2**40, budget_used=-1, authz_latency_ms=float("nan")))
    assert (row["budget_cost"], row["budget_used"], row["authz_latency_ms"]) == (None, -1, None)


def test_unknown_decision_is_stored_as_error() -> None:
    assert decision_row(AuditRecord("r", DECIDED_AT, "maybe", 200))["decision"] == "error"
    assert decision_row(AuditRecord("r", DECIDED_AT, "cancelled", None))["decision"] == "cancelled"


def test_columns_are_named_for_the_table() -> None:
    row = decision_row(_record())
    assert row["decided_at"] == DECIDED_AT
    assert "created_at" not in row  # the server's clock sets it at insert
    assert row["authz_status_code"] == 200
    assert "status_code" not in row  # the final status belongs to the access log


def test_completion_row_cleans_what_envoy_logged() -> None:
    row = completion_row({"request_id": "req-1", "gateway_type": "PLANT", "status_code": 503,
                          "total_duration_ms": 12.5, "request_bytes": 10, "response_bytes": 2**70,
                          "client_ip": "10.0.0.1", "path": "/a\x00b",
                          "started_at": DECIDED_AT, "completed_at": DECIDED_AT + 12_500,
                          "authz_consulted": "yes"})  # fmt: skip
    assert (row["status_code"], row["total_duration_ms"], row["request_bytes"]) == (503, 12.5, 10)
    assert row["response_bytes"] is None  # beyond bigint
    assert row["client_ip"] == "10.0.0.1"
    assert row["path"] == "/ab"
    assert (row["started_at"], row["completed_at"]) == (DECIDED_AT, DECIDED_AT + 12_500)
    assert row["authz_consulted"] is None  # not a boolean


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"p": {"allow": True, "reason": "", "n": 2**63 - 1}}, None),  # already clean: kept
        ({"n": 2**64}, {"n": str(2**64)}),  # beyond bigint: text
        ({1: "a"}, {"1": "a"}),  # JSON keys are text
        ({"f": float("inf"), "t": (1, 2)}, {"f": None, "t": [1, 2]}),
        ({"s": "é\udcff"}, {"s": "é\ufffd"}),
        ({"s": "x" * 70_000}, {"s": "x" * 65536}),
        (_nested(70), "cut"),
    ],
)  # fmt: skip
def test_opa_decisions_are_copied_only_when_something_needs_cleaning(
    given: object, stored: object
) -> None:
    row = decision_row(_record(opa_decisions=given))
    if stored is None:
        assert row["opa_decisions"] is given  # the fast path: no copy, same value
    elif stored == "cut":
        assert row["opa_decisions"] != given
        orjson.dumps(row)
    else:
        assert row["opa_decisions"] == stored


def test_texts_of_other_types_are_converted_by_the_slow_path() -> None:
    row = decision_row(_record(user_id=42, roles=["admin", 7], path="/ok"))
    assert (row["user_id"], row["roles"], row["path"]) == ("42", ["admin", "7"], "/ok")
