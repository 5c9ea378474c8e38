"""AccessLogService turns Envoy's HTTP access-log entries into completions for the audit sink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from authz_service.audit.accesslog import AccessLogService
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
