"""AccessLogService turns Envoy's HTTP access-log entries into completions for the audit sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from authz_service.audit.accesslog import AccessLogService, completion_of
from authz_service.audit.record import AccessLogCompletion, AuditRecord


class RecordingSink:
    accepting = True

    def __init__(self) -> None:
        self.completions: list[AccessLogCompletion] = []

    def submit(self, record: AuditRecord) -> None:
        raise AssertionError("the access log only completes rows")

    def complete(self, completion: AccessLogCompletion) -> None:
        self.completions.append(completion)


def _entry(
    request_id: str = "", header_id: str = "", code: int = 200
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = request_id
    if header_id:
        entry.request.request_headers["x-request-id"] = header_id
    entry.request.request_headers_bytes = 100
    entry.request.request_body_bytes = 5
    entry.response.response_code.value = code
    entry.response.response_headers_bytes = 50
    entry.response.response_body_bytes = 7
    entry.common_properties.start_time.FromSeconds(1_700_000_000)
    entry.common_properties.duration.FromMilliseconds(42)
    entry.common_properties.upstream_cluster = "backend"
    entry.common_properties.response_flags.upstream_connection_failure = True
    return entry


async def _stream(
    *entries: accesslog_pb2.HTTPAccessLogEntry,
) -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "gateway"
    message.http_logs.log_entry.extend(entries)
    yield message


async def test_entries_complete_rows_by_request_id(caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink()
    service = AccessLogService(sink)
    stream = _stream(_entry("req-1", code=503), _entry(header_id="req-2"), _entry())
    response = await service.StreamAccessLogs(stream, None)
    assert isinstance(response, als_pb2.StreamAccessLogsResponse)
    assert [c.request_id for c in sink.completions] == ["req-1", "req-2"]
    first = sink.completions[0]
    assert (first.status_code, first.total_duration_ms) == (503, 42.0)
    assert (first.request_bytes, first.response_bytes) == (105, 57)
    assert (first.upstream_cluster, first.response_flags) == (
        "backend",
        "upstream_connection_failure",
    )
    assert first.started_at is not None
    assert first.started_at.timestamp() == 1_700_000_000
    assert "without request id" in caplog.records[0].getMessage()


def test_durations_times_and_flags_are_read_exactly() -> None:
    entry = _entry("req-3")
    entry.common_properties.ClearField("duration")  # Envoy leaves it unset on some paths
    entry.common_properties.time_to_last_downstream_tx_byte.FromNanoseconds(1_234_567_891)
    entry.common_properties.start_time.FromNanoseconds(1_700_000_000_123_456_789)
    entry.common_properties.ClearField("response_flags")
    completion = completion_of(entry)
    assert completion is not None
    assert completion.total_duration_ms == pytest.approx(1234.567891)
    assert completion.started_at == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert completion.response_flags is None
    entry.common_properties.ClearField("time_to_last_downstream_tx_byte")
    assert completion_of(entry).total_duration_ms is None  # type: ignore[union-attr]
