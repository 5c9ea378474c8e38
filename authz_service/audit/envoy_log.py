"""Envoy's access-log line: the JSON fields render asks Envoy for, and how the shipper reads them.

One line per request per hop, written by Envoy itself (so it exists even when the authz
service is down). The request key and correlation id expressions come from render, which
uses the same ones in the problem+json bodies of Envoy's own replies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from authz_service.audit.chain import micros
from authz_service.audit.clean import completion_row

# the ext_authz filter puts the service's dynamic metadata under its own name
AUTHZ_METADATA = "envoy.filters.http.ext_authz"
# Envoy's local-reply details when the check failed (timeout, service down) or was denied
AUTHZ_DETAILS_PREFIX = "ext_authz"


def log_format(gateway_type: str, request_key: str, correlation_id: str) -> dict[str, str]:
    """The json_format of the file access log (values are Envoy command operators)."""
    return {
        "request_id": request_key,
        "correlation_id": correlation_id,
        "causation_id": "%REQ(x-causation-id)%",
        "gateway_type": gateway_type,
        "route": "%ROUTE_NAME%",
        "method": "%REQ(:METHOD)%",
        "path": "%PATH(NQ:ORIG_OR_PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "start": "%START_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%",
        "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
        "upstream_duration_us": "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "user_agent": "%REQ(user-agent)%",
        "authz": f"%DYNAMIC_METADATA({AUTHZ_METADATA}:decision)%",
    }


class UnreadableLineError(ValueError):
    """The line is not a JSON object with a request id (a torn line, or not Envoy's)."""


def _text(line: dict[str, Any], name: str) -> str | None:
    value = line.get(name)
    if value is None or value == "-":  # Envoy's "nothing" in some operators
        return None
    return value if isinstance(value, str) else str(value)


def _number(line: dict[str, Any], name: str) -> int | None:
    value = line.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _started_at(line: dict[str, Any]) -> int | None:
    text = _text(line, "start")
    if text is None:
        return None
    try:
        return micros(datetime.fromisoformat(text))
    except ValueError:
        return None


def completion_of(raw: bytes, read_at_us: int) -> dict[str, Any]:
    """The completion row of one line (cleaned); UnreadableLineError when there is none."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise UnreadableLineError(f"not JSON: {error}") from error
    if not isinstance(line, dict) or not _text(line, "request_id"):
        raise UnreadableLineError("no request_id")
    started = _started_at(line)
    duration = _number(line, "duration_us")
    details = _text(line, "details")
    decided = _text(line, "authz") in ("allow", "deny")
    consulted = decided or (details or "").startswith(AUTHZ_DETAILS_PREFIX)
    fields = {
        "request_id": _text(line, "request_id"),
        "gateway_type": _text(line, "gateway_type"),
        "correlation_id": _text(line, "correlation_id"),
        "causation_id": _text(line, "causation_id"),
        "route_id": _text(line, "route"),
        "method": _text(line, "method"),
        "path": _text(line, "path"),
        "client_ip": _text(line, "client"),
        "user_agent": _text(line, "user_agent"),
        "status_code": _number(line, "status"),
        "response_code_details": details,
        "response_flags": _text(line, "flags"),
        "total_duration_ms": None if duration is None else duration / 1000,
        "request_bytes": _number(line, "bytes_in"),
        "response_bytes": _number(line, "bytes_out"),
        "upstream_cluster": _text(line, "upstream_cluster"),
        "upstream_host": _text(line, "upstream_host"),
        "started_at": started,
        # a completion is never without it: Envoy's end of the request, else when it was read
        "completed_at": started + duration
        if started is not None and duration is not None
        else read_at_us,
        "authz_consulted": consulted,
    }
    return completion_row(fields)
