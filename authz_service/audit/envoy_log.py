"""How the shipper reads Envoy's access-log line (its fields: gateway_contract.access_log)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from authz_service.audit.chain import EPOCH, micros
from authz_service.audit.clean import completion_row

# Envoy's local-reply details when the check failed (timeout, service down) or was denied
AUTHZ_DETAILS_PREFIX = "ext_authz"
EPOCH_ORDINAL = EPOCH.toordinal()


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
