"""Envoy's gRPC access-log service: completes each audit row with what Envoy finally answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from authz_service.audit.record import AccessLogCompletion
from authz_service.ports import AuditSink

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Envoy sends up to 64 KiB of entries at once (hundreds): handled in one go, they held the
# event loop for a millisecond or more, which showed in the checks' p99 at a fixed rate.
ENTRIES_PER_SLICE = 32


def _flags(common: accesslog_pb2.AccessLogCommon) -> str | None:
    """The set response flags by name (e.g. "upstream_connection_failure"), comma-separated."""
    if not common.HasField("response_flags"):  # most entries: nothing to list
        return None
    names = [f.name for f, value in common.response_flags.ListFields() if value is True]
    return ",".join(names) or None


def _duration_ms(common: accesslog_pb2.AccessLogCommon) -> float | None:
    # seconds and nanos read directly: Duration.ToNanoseconds() is Python code in protobuf
    for name in ("duration", "time_to_last_downstream_tx_byte"):
        if common.HasField(name):
            value = getattr(common, name)
            return float(value.seconds * 1e3 + value.nanos / 1e6)
    return None


def _started_at(common: accesslog_pb2.AccessLogCommon) -> datetime | None:
    if not common.HasField("start_time"):
        return None
    start = common.start_time  # exact to the microsecond, unlike a float of seconds
    return EPOCH + timedelta(seconds=start.seconds, microseconds=start.nanos // 1000)


def completion_of(entry: accesslog_pb2.HTTPAccessLogEntry) -> AccessLogCompletion | None:
    """The completion for one entry; None when it carries no request id to join on."""
    request = entry.request
    request_id = request.request_id or request.request_headers.get("x-request-id", "")
    if not request_id:
        return None
    common, response = entry.common_properties, entry.response
    return AccessLogCompletion(
        request_id=request_id,
        status_code=response.response_code.value,
        total_duration_ms=_duration_ms(common),
        request_bytes=request.request_headers_bytes + request.request_body_bytes,
        response_bytes=response.response_headers_bytes + response.response_body_bytes,
        upstream_cluster=common.upstream_cluster or None,
        response_flags=_flags(common),
        started_at=_started_at(common),
        completed_at=datetime.now(UTC),
    )


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """StreamAccessLogs: every HTTP entry becomes sink.complete(...); TCP entries are ignored."""

    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink

    async def StreamAccessLogs(  # noqa: N802 - the gRPC method name
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[object, object],
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for index, entry in enumerate(message.http_logs.log_entry):
                if index and not index % ENTRIES_PER_SLICE:
                    await asyncio.sleep(0)  # let checks run between slices of a full buffer
                completion = completion_of(entry)
                if completion is None:
                    log.warning("access log entry without request id ignored (%s %s)",
                                entry.request.request_method, entry.request.path[:200])  # fmt: skip
                    continue
                self._sink.complete(completion)
        return als_pb2.StreamAccessLogsResponse()
