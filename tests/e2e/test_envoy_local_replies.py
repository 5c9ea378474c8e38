"""Every reply a client can get is problem+json with a correlation id (issue 13, findings 3-5).

One row per way Envoy answers a request itself, each with the status, problem type and title
the client must see, through a public listener of each kind (PLANT, CP). Every one carries a
correlation id in its body and in its x-correlation-id header, those refused before the Lua
filter runs (codec, connection manager) included: Envoy makes one from the request when the
client sent none (the audit row has the same).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e._gateway_stack import GatewayStack, StackOptions
from tests.e2e._odd_upstream import PROBLEM_409, odd_upstream
from tests.support.free_ports import free_port

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://gateway.example/problems/"
MAX_PATH_BYTES = 4096
RECEIVE_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def odd_port() -> Iterator[int]:
    with odd_upstream() as port:
        yield port


@pytest.fixture(scope="module")
def gateway_stack_options(
    odd_port: int, gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]]
) -> StackOptions:
    stack_options, _ = gateway_stack_types
    closed_port = free_port()  # a port nothing listens on: connections are refused
    everywhere = ["plant", "cp", "pp"]
    routes = [
        {"id": "odd", "match": {"prefix": "/api/v1/odd", "methods": ["GET", "HEAD"]},
         "entry_points": everywhere, "upstream": "odd", "public": True, "timeout_ms": 1000},
        {"id": "down", "match": {"path": "/api/v1/down", "methods": ["GET"]},
         "entry_points": everywhere, "upstream": "down", "public": True},
    ]  # fmt: skip
    upstreams = {
        "odd": {"host": "127.0.0.1", "port": odd_port, "health_check": None},
        "down": {"host": "127.0.0.1", "port": closed_port, "health_check": None},
    }
    limits = {
        "max_path_bytes": MAX_PATH_BYTES,
        "request_headers_timeout_ms": RECEIVE_TIMEOUT_MS,
        "request_receive_timeout_ms": RECEIVE_TIMEOUT_MS,
    }
    options = stack_options(config_overrides={"upstreams": upstreams, "limits": limits})
    options.extra_routes = [*options.extra_routes, *routes]
    return options


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM_JSON, (self.headers, self.body[:300])
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def exchange(port: int, request: bytes, method: str = "GET", timeout: float = 15) -> Exchange:
    """Send raw bytes (whatever a client may send) and read one HTTP response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Envoy may answer (413) and close before it read everything: its reply still counts
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return Exchange(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def _request(line: str, *headers: str, body: bytes = b"", correlation: str = "") -> bytes:
    """A request as raw bytes (latin-1: any byte a client may send)."""
    lines = [line, *headers]
    if correlation:
        lines.append(f"x-correlation-id: {correlation}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Row:
    """A request Envoy answers itself, and the problem the client must get."""

    line: str
    headers: tuple[str, ...] = ("Host: gateway",)
    status: int = 0
    code: str = ""
    title: str = ""
    method: str = "GET"
    body: bytes = b""
    raw: bytes = b""  # sent as is instead of line/headers/body


HOST = ("Host: gateway",)
ROWS: dict[str, Row] = {
    "codec-garbage": Row("", raw=b"\x16\x03\x01\x00\x00\r\n\r\n", status=400, code="bad_request",
                         title="Bad request"),
    "escaped-slash": Row("GET /api/v1%2Fadmin HTTP/1.1", status=400, code="bad_request",
                         title="Bad request"),
    "missing-host": Row("GET /health HTTP/1.1", headers=(), status=400, code="bad_request",
                        title="Bad request"),
    "unknown-method": Row("FOO /health HTTP/1.1", status=400, code="bad_request",
                          title="Bad request"),
    "no-route": Row("GET /nowhere HTTP/1.1", status=404, code="not_found", title="Not found"),
    "method-not-on-route": Row("DELETE /api/v1/orders HTTP/1.1", status=404, code="not_found",
                               title="Not found", method="DELETE"),
    "headers-never-end": Row("", raw=b"GET /health HTTP/1.1\r\nHost: gateway\r\n", status=408,
                             code="request_timeout", title="Request timeout"),
    "body-never-ends": Row("POST /api/v1/orders HTTP/1.1", headers=(*HOST, "Content-Length: 10"),
                           body=b"ab", status=408, code="request_timeout",
                           title="Request timeout", method="POST"),
    "body-too-large": Row("POST /api/v1/orders HTTP/1.1",
                          headers=(*HOST, f"Content-Length: {2 * 1_048_576}"),
                          body=b"x" * (2 * 1_048_576), status=413, code="payload_too_large",
                          title="Payload too large", method="POST"),
    "target-too-long": Row(f"GET /api/v1/status?{'a' * MAX_PATH_BYTES} HTTP/1.1", status=414,
                           code="uri_too_long", title="URI too long"),
    "http-1.0": Row("GET /health HTTP/1.0", headers=(), status=426, code="upgrade_required",
                    title="Upgrade required"),
    "headers-too-large": Row("GET /health HTTP/1.1", headers=(*HOST, f"x-big: {'a' * 70_000}"),
                             status=431, code="request_header_fields_too_large",
                             title="Request header fields too large"),
    "too-many-headers": Row("GET /health HTTP/1.1",
                            headers=(*HOST, *(f"x-h{i}: v" for i in range(120))), status=431,
                            code="request_header_fields_too_large",
                            title="Request header fields too large"),
    "connect": Row("CONNECT example.com:443 HTTP/1.1", headers=("Host: example.com:443",),
                   status=501, code="not_implemented", title="Not implemented",
                   method="CONNECT"),
    "trace": Row("TRACE /health HTTP/1.1", status=501, code="not_implemented",
                 title="Not implemented"),
    "options-asterisk": Row("OPTIONS * HTTP/1.1", status=501, code="not_implemented",
                            title="Not implemented"),
    "upgrade-websocket": Row("GET /health HTTP/1.1",
                             headers=(*HOST, "Connection: upgrade", "Upgrade: websocket"),
                             status=501, code="not_implemented", title="Not implemented"),
    "transfer-encoding-gzip": Row("POST /api/v1/orders HTTP/1.1",
                                  headers=(*HOST, "Transfer-Encoding: gzip"), status=501,
                                  code="not_implemented", title="Not implemented",
                                  method="POST"),
    "upstream-speaks-garbage": Row("GET /api/v1/odd/garbage HTTP/1.1", status=502,
                                   code="bad_gateway", title="Bad gateway"),
    "upstream-refuses": Row("GET /api/v1/down HTTP/1.1", status=503,
                            code="upstream_unavailable", title="Upstream unavailable"),
    "upstream-too-slow": Row("GET /api/v1/odd/slow HTTP/1.1", status=504,
                             code="upstream_timeout", title="Upstream timeout"),
}  # fmt: skip
ENTRIES = ("plant", "cp")
CASES = [pytest.param(entry, row, id=f"{name}-{entry}") for name, row in ROWS.items()
         for entry in ENTRIES]  # fmt: skip


@pytest.mark.parametrize(("entry", "row"), CASES)
def test_every_local_reply_is_a_problem_with_a_correlation_id(
    gateway_stack: GatewayStack, entry: str, row: Row
) -> None:
    # no x-correlation-id from the client: the gateway must give the reply one of its own
    request = row.raw or _request(row.line, *row.headers, body=row.body)
    reply = exchange(gateway_stack.port(entry), request, method=row.method)
    assert reply.status == row.status, (reply.status, reply.body[:300])
    problem = reply.problem()
    assert (problem["type"], problem["title"]) == (PROBLEM_BASE + row.code, row.title)
    assert problem["status"] == row.status
    correlation = problem["correlation_id"]
    assert isinstance(correlation, str)
    assert correlation
    # the client can quote it from the header as well as from the body
    assert reply.headers.get("x-correlation-id") == correlation, reply.headers
    # no id from the client: the entry hop's request id is the correlation id (replies made
    # before the codec parsed the headers have neither: a per-connection id instead)
    if "x-request-id" in reply.headers:
        assert correlation == reply.headers["x-request-id"]


@pytest.mark.parametrize("name", ["no-route", "target-too-long", "connect", "upstream-refuses"])
def test_a_local_reply_carries_the_clients_correlation_id(
    gateway_stack: GatewayStack, name: str
) -> None:
    row, mine = ROWS[name], str(uuid.uuid4())
    request = _request(row.line, *row.headers, body=row.body, correlation=mine.upper())
    reply = exchange(gateway_stack.port("cp"), request, method=row.method)
    assert (reply.status, reply.problem()["correlation_id"]) == (row.status, mine)


# --- finding 5: long paths never reach the backend; upstream error bodies -----------------


@pytest.mark.parametrize("entry", ["plant", "cp", "pp"])
def test_a_target_at_the_limit_passes_and_one_byte_more_is_a_414(
    gateway_stack: GatewayStack, entry: str
) -> None:
    token = gateway_stack.sign_token(roles=("customer", "support"))  # orders:read everywhere
    base = "/api/v1/orders/7?q="
    at_limit = base + "a" * (MAX_PATH_BYTES - len(base))
    allowed = gateway_stack.request(entry, "GET", at_limit, token=token)
    assert allowed.status == 200, allowed.body[:200]
    assert allowed.json()["resource"] == "order"
    refused = gateway_stack.request(entry, "GET", at_limit + "a", token=token)
    assert refused.status == 414
    assert refused.json()["type"] == PROBLEM_BASE + "uri_too_long"
    assert str(MAX_PATH_BYTES) in refused.json()["detail"]
    # the problem names the target but never echoes more of it than the limit
    far_over = gateway_stack.request(entry, "GET", at_limit + "a" * 5 * MAX_PATH_BYTES, token=token)
    assert far_over.status == 414
    assert far_over.json()["instance"].startswith(base)
    assert len(far_over.json()["instance"]) <= MAX_PATH_BYTES


@dataclass(frozen=True)
class Upstream:
    status: int
    replaced: bool
    kept_headers: tuple[tuple[str, str], ...] = ()


UPSTREAM_REPLIES = {
    "plain-503": Upstream(503, True, (("retry-after", "7"),)),
    "json-404": Upstream(404, True),
    "html-500": Upstream(500, True),
    "gzip-502": Upstream(502, True),
    "bare-401": Upstream(401, True, (("www-authenticate", 'Basic realm="backend"'),)),
    "problem-409": Upstream(409, False),
    # bigger than any buffer of Envoy's: its status kept all the same, its body dropped
    "huge-503": Upstream(503, True),
    "huge-chunked-500": Upstream(500, True),
    "ok": Upstream(200, False),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("name", sorted(UPSTREAM_REPLIES))
def test_an_upstream_error_body_that_is_no_problem_is_replaced_status_and_headers_kept(
    gateway_stack: GatewayStack, entry: str, name: str
) -> None:
    expected = UPSTREAM_REPLIES[name]
    correlation = str(uuid.uuid4())
    path = f"/api/v1/odd/{name}"
    reply = gateway_stack.request(entry, "GET", path, headers={"x-correlation-id": correlation})
    assert reply.status == expected.status
    for header, value in expected.kept_headers:
        assert reply.headers[header] == value
    if not expected.replaced:
        assert reply.body == (PROBLEM_409 if name == "problem-409" else b"fine")
        return
    assert reply.content_type == PROBLEM_JSON
    assert "content-encoding" not in reply.headers
    problem = reply.json()
    assert problem["type"] == PROBLEM_BASE + "upstream_error"
    assert (problem["status"], problem["instance"]) == (expected.status, path)
    assert problem["correlation_id"] == correlation
    assert b"Traceback" not in reply.body
    assert b"OrderRepo" not in reply.body
