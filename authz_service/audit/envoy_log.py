"""Envoy's access-log line: the JSON fields render asks Envoy for, and how the shipper reads them.

One line per request per hop, written by Envoy itself (so it exists even when the authz
service is down). The request key and correlation id expressions come from render, which
uses the same ones in the problem+json bodies of Envoy's own replies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from authz_service.audit.chain import EPOCH, micros
from authz_service.audit.clean import completion_row
from authz_service.runtime_config import DECISION_HEADER

# the ext_authz filter puts the service's dynamic metadata under its own name
AUTHZ_METADATA = "envoy.filters.http.ext_authz"
# the key of the decision there: the gRPC answer's own metadata, or the HTTP answer's header
# (`dynamic_metadata_from_headers` keeps the header's name)
DECISION_KEYS = {"grpc": "decision", "http": DECISION_HEADER}
# Envoy's local-reply details when the check failed (timeout, service down) or was denied
AUTHZ_DETAILS_PREFIX = "ext_authz"
EPOCH_ORDINAL = EPOCH.toordinal()


def log_format(
    gateway_type: str,
    request_key: str,
    correlation_id: str,
    *,
    sets_causation_id: bool = False,
    transport: str = "grpc",
) -> dict[str, str]:
    """The json_format of the file access log (values are Envoy command operators).

    Fields are named after the audit columns they fill, so a parsed line needs no renaming.
    A hop that sets x-causation-id for the next one (CP, PP) logs no causation id: the header
    it would log is the one it sent on, and its public listener accepted none. `transport` is
    the ext_authz transport (grpc|http): where the decision is found.
    """
    causation = {} if sets_causation_id else {"causation_id": "%REQ(x-causation-id)%"}
    return {
        "request_id": request_key,
        "correlation_id": correlation_id,
        **causation,
        "gateway_type": gateway_type,
        "route_id": "%ROUTE_NAME%",
        "method": "%REQ(:METHOD)%",
        "path": "%PATH(NQ:ORIG_OR_PATH)%",
        "status_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "started_at": "%START_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%",
        "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
        "upstream_duration_us": "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
        "request_bytes": "%BYTES_RECEIVED%",
        "response_bytes": "%BYTES_SENT%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "client_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "user_agent": "%REQ(user-agent)%",
        "authz_decision": f"%DYNAMIC_METADATA({AUTHZ_METADATA}:{DECISION_KEYS[transport]})%",
    }


class UnreadableLineError(ValueError):
    """The line is not a JSON object with a request id (a torn line, or not Envoy's)."""


def _started_at(text: Any) -> int | None:
    """Envoy's start time (UTC, microseconds) as microseconds since the epoch."""
    if not isinstance(text, str):
        return None
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        return None
    if start.utcoffset():  # Envoy writes UTC ("Z"): the quick way is exact for it
        return micros(start)
    seconds = (start.toordinal() - EPOCH_ORDINAL) * 86400 + start.hour * 3600
    return (seconds + start.minute * 60 + start.second) * 1_000_000 + start.microsecond


def completion_of(raw: bytes, read_at_us: int) -> dict[str, Any]:
    """The completion row of one line (cleaned); UnreadableLineError when there is none."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise UnreadableLineError(f"not JSON: {error}") from error
    if type(line) is not dict or not line.get("request_id"):
        raise UnreadableLineError("no request_id")
    started = _started_at(line.get("started_at"))
    duration = line.get("duration_us")
    if type(duration) is not int:
        duration = None
    details = line.get("response_code_details")
    if line.get("response_flags") == "-":  # Envoy's "no flag"
        line["response_flags"] = None
    line["started_at"] = started
    line["total_duration_ms"] = None if duration is None else duration / 1000
    # a completion is never without it: Envoy's end of the request, else when it was read
    line["completed_at"] = (
        started + duration if started is not None and duration is not None else read_at_us
    )
    line["authz_consulted"] = line.get("authz_decision") in ("allow", "deny") or (
        isinstance(details, str) and details.startswith(AUTHZ_DETAILS_PREFIX)
    )
    return completion_row(line)
