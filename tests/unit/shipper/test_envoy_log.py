"""Envoy's access-log lines as the shipper reads them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from authz_service.audit.chain import micros
from authz_service.audit.envoy_log import UnreadableLineError, completion_of
from gateway_contract.access_log import log_format


def _line(**fields: object) -> bytes:
    base = {
        "request_id": "r1", "gateway_type": "PLANT", "status_code": 200,
        "response_code_details": "via_upstream", "response_flags": "-",
        "started_at": "2026-01-02T03:04:05.123456Z", "duration_us": 2500,
        "authz_decision": "allow", "route_id": "orders-list", "client_ip": "10.0.0.1",
    }  # fmt: skip
    return orjson.dumps({**base, **fields})


def test_a_line_becomes_a_completion_row() -> None:
    row = completion_of(_line(), read_at_us=0)
    started = micros(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC))
    assert (row["started_at"], row["completed_at"]) == (started, started + 2500)
    assert (row["status_code"], row["total_duration_ms"], row["route_id"]) == (
        200,
        2.5,
        "orders-list",
    )
    assert (row["response_flags"], row["authz_consulted"]) == (None, True)


@pytest.mark.parametrize(
    ("fields", "consulted"),
    [({"authz_decision": "deny"}, True),
     ({"authz_decision": None, "response_code_details": "ext_authz_error"}, True),
     ({"authz_decision": None, "response_code_details": "route_not_found"}, False),
     ({"authz_decision": None}, False)],
)  # fmt: skip
def test_whether_ext_authz_was_consulted(fields: dict[str, object], consulted: bool) -> None:
    assert completion_of(_line(**fields), read_at_us=0)["authz_consulted"] is consulted


def test_a_line_without_times_is_completed_when_read() -> None:
    row = completion_of(_line(started_at=None, duration_us=None), read_at_us=42)
    assert (row["started_at"], row["completed_at"]) == (None, 42)


@pytest.mark.parametrize("raw", [b'{"request_id": "r1", "sta', b"[1, 2]",
                                 b'{"status_code": 200}', b'{"request_id": ""}'])  # fmt: skip
def test_unreadable_lines_are_refused(raw: bytes) -> None:
    with pytest.raises(UnreadableLineError):
        completion_of(raw, read_at_us=0)


def test_the_format_carries_the_ids_render_gives_it() -> None:
    fields = log_format("CP", "%KEY%", "%CORR%")
    assert (fields["request_id"], fields["correlation_id"], fields["gateway_type"]) == (
        "%KEY%", "%CORR%", "CP",
    )  # fmt: skip
