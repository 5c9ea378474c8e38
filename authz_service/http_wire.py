"""The HTTP transport's wire format: a check request into a CheckContext, an outcome into bytes.

Envoy's `http_service` ext_authz sends the client's method and `/check` + its path, the
allowed headers, and the route's facts in one header (gateway_contract's ROUTE_FACTS_HEADER,
read by RouteFacts.from_route_metadata); a 200 allows (its identity headers go upstream),
anything else is the client's answer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from functools import lru_cache
from http import HTTPStatus

import orjson

from authz_service.check_context import CheckContext, client_address
from authz_service.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Denial
from authz_service.stages.decide import Allowance
from gateway_contract.headers import (
    CAUSATION_HEADER,
    CLIENT_IP_HEADER,
    CORRELATION_HEADER,
    DECISION_HEADER,
    PEER_HEADER,
    REQUEST_ID_HEADER,
    ROUTE_FACTS_HEADER,
)
from gateway_contract.http_check import HTTP_CHECK_PATH_PREFIX, HTTP_UNAVAILABLE_STATUS
from gateway_contract.route_facts import RouteFacts

# what a check without facts (or with malformed ones) reads as, like a gRPC check without any
_NO_FACTS = RouteFacts.from_context_extensions({})
_EXPECTED_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
# a header value that could end the header or the head early: never written
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_ALLOW_HEAD = f"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DECISION_HEADER}: allow\r\n"


class UnsafeHeaderError(ValueError):
    """A response header value holds CR, LF or NUL: the response is not sent."""


@lru_cache(maxsize=4096)
def route_facts(text: str) -> RouteFacts:
    """The route's facts; a malformed value gives none (the check then fails closed: no
    gateway type, no permission). Cached: a gateway has few routes."""
    try:
        return RouteFacts.from_route_metadata(text)
    except ValueError:
        return _NO_FACTS


def check_path(target: str) -> str | None:
    """The client's path of a check request target, None when it is not a check."""
    if not target.startswith(HTTP_CHECK_PATH_PREFIX):
        return None
    rest = target[len(HTTP_CHECK_PATH_PREFIX) :]
    if rest.startswith("/"):
        return rest
    if rest == "" or rest.startswith("?"):
        return "/" + rest
    return None


def caller_budget(headers: Mapping[str, str]) -> float | None:
    """Seconds Envoy waits for this check (its expected-timeout header), if it said."""
    text = headers.get(_EXPECTED_TIMEOUT_HEADER)
    if text is None or not text.isdigit():
        return None
    return int(text) / 1000


def check_context(method: str, path: str, headers: dict[str, str]) -> CheckContext:
    """The facts of one check, as the gRPC transport reads them from a CheckRequest."""
    return CheckContext(
        request_id=headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex,
        correlation_id=headers.get(CORRELATION_HEADER) or None,
        causation_id=headers.get(CAUSATION_HEADER) or None,
        method=method,
        path=path,
        headers=headers,
        route=route_facts(headers.get(ROUTE_FACTS_HEADER, "")),
        client_ip=client_address(headers.get(CLIENT_IP_HEADER, ""), headers.get(PEER_HEADER, "")),
    )


def _header_block(headers: Iterable[tuple[str, str]]) -> str:
    pairs = list(headers)
    if _UNSAFE_VALUE.search("\t".join(value for _, value in pairs)):
        raise UnsafeHeaderError("a response header value holds CR, LF or NUL")
    return "".join(f"{name}: {value}\r\n" for name, value in pairs)


def allowed_response(allowance: Allowance, *, close: bool) -> bytes:
    """200: every identity header goes upstream (Envoy's allowed_upstream_headers)."""
    tail = "connection: close\r\n\r\n" if close else "\r\n"
    return (_ALLOW_HEAD + _header_block(allowance.headers) + tail).encode()


def denied_response(denial: Denial, check: CheckContext, *, head_only: bool, close: bool) -> bytes:
    """The denial's status, problem+json body and headers, as the gRPC transport sends them."""
    body = orjson.dumps(denial.problem(check.path_only or "/", check.correlation_id))
    headers = denial.response_headers()
    if check.correlation_id is not None:
        headers.append((CORRELATION_HEADER, check.correlation_id))
    headers.append((DECISION_HEADER, "deny"))  # as the gRPC answer's metadata says
    status = HTTP_UNAVAILABLE_STATUS if denial.status == 503 else denial.status
    return response(status, headers, b"" if head_only else body, len(body), close=close)


def response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    length: int | None = None,
    *,
    close: bool,
) -> bytes:
    """One HTTP/1.1 response; `length` is the body's (sent or not: a HEAD gets none)."""
    reason = _REASONS.get(status, "Unknown")
    closing = "connection: close\r\n" if close else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\n{_header_block(headers)}"
        f"content-length: {len(body) if length is None else length}\r\n{closing}\r\n"
    )
    return head.encode() + body


def problem_response(status: int, code: str, detail: str, *, close: bool) -> bytes:
    """The transport's own refusals (malformed, too large, unknown path): never an allow."""
    body = orjson.dumps(
        {
            "type": PROBLEM_TYPE_BASE + code,
            "title": _REASONS.get(status, "Error"),
            "status": status,
            "detail": detail,
        }
    )
    headers = [("content-type", PROBLEM_CONTENT_TYPE), ("cache-control", "no-store")]
    return response(status, headers, body, close=close)
