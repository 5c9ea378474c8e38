"""The real Envoy against the contract's matcher: same route, same facts, for every request.

config/gateway.yaml plus tests/support/route_cases.py's routes is rendered and run in the
three real Envoys, over each ext_authz transport. In the authz service's place a recorder
keeps every check (the path Envoy sends, and the route's facts: the gRPC context extensions,
or the map the HTTP check's x-authz-route header carries) and refuses it, so nothing is
forwarded past the checking hop. For every entry point, method and request target of the
table, Envoy's own choice (the route name in its access log, the check it made) must be what
`gateway_contract.matcher` predicts: `envoy_path` (None: Envoy answers 400), then
`match_route`, then `facts_of_route` for the facts.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3.external_auth_pb2_grpc import (
    AuthorizationServicer,
    add_AuthorizationServicer_to_server,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2

from gateway_config import load_gateway_config
from gateway_contract.headers import CORRELATION_HEADER, ROUTE_FACTS_HEADER
from gateway_contract.http_check import HTTP_CHECK_PATH_PREFIX
from gateway_contract.matcher import envoy_path, match_route
from gateway_contract.route_facts import facts_of_route
from gateway_contract.runtime import load_runtime_config
from tests.e2e._gateway_stack import TEST_ROUTES, GatewayStack, StackOptions
from tests.support.route_cases import EXTRA_ROUTES, METHODS, TARGETS

ENTRY_POINTS = ("plant", "cp", "pp")


@dataclass(frozen=True)
class SeenCheck:
    method: str
    path: str
    context: dict[str, str]


class CheckRecorder:
    """Keeps what Envoy sent, by the client's correlation id (every check is refused)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[SeenCheck]] = {}
        self._lock = threading.Lock()

    def add(self, correlation_id: str, check: SeenCheck) -> None:
        with self._lock:
            self.seen.setdefault(correlation_id, []).append(check)


class GrpcRecorder(AuthorizationServicer):  # type: ignore[misc]
    """The gRPC transport: the check's path and context extensions."""

    def __init__(self, recorder: CheckRecorder) -> None:
        self.recorder = recorder

    def Check(self, request: ext.CheckRequest, context: Any) -> ext.CheckResponse:  # noqa: N802
        http = request.attributes.request.http
        check = SeenCheck(http.method, http.path, dict(request.attributes.context_extensions))
        self.recorder.add(http.headers.get(CORRELATION_HEADER, ""), check)
        return ext.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=ext.DeniedHttpResponse(status=HttpStatus(code=403)),
        )


class HttpRecorder(BaseHTTPRequestHandler):
    """The HTTP transport: the path under the check prefix, the facts header's map."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's authz cluster expects
    recorder: CheckRecorder  # set on a subclass per stack

    def _check(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        facts = self.headers.get(ROUTE_FACTS_HEADER)
        # the exact map the header carries (a strict parse: a malformed encoding fails here)
        context = {} if facts is None else dict(parse_qsl(facts, True, True))
        path = self.path.removeprefix(HTTP_CHECK_PATH_PREFIX)
        check = SeenCheck(self.command, path, context)
        self.recorder.add(self.headers.get(CORRELATION_HEADER, ""), check)
        self.send_response(403)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a table of checks would flood the test's output."""


for _method in METHODS:
    setattr(HttpRecorder, f"do_{_method}", HttpRecorder._check)


@pytest.fixture(scope="module")
def gateway_stack_options() -> StackOptions:
    return StackOptions(with_authz=False, extra_routes=[*TEST_ROUTES, *EXTRA_ROUTES])


@pytest.fixture(scope="module")
def recorder(gateway_stack: GatewayStack) -> Iterator[CheckRecorder]:
    """On the authz port of the stack (which runs no authz service), over its transport."""
    recording = CheckRecorder()
    address = ("127.0.0.1", gateway_stack.ports["authz"])
    if gateway_stack.options.transport == "http":
        handler = type("StackRecorder", (HttpRecorder,), {"recorder": recording})
        http_server = ThreadingHTTPServer(address, handler)
        thread = threading.Thread(target=http_server.serve_forever, daemon=True)
        thread.start()
        try:
            yield recording
        finally:
            http_server.shutdown()
            http_server.server_close()
            thread.join()
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_AuthorizationServicer_to_server(GrpcRecorder(recording), server)
    server.add_insecure_port(f"{address[0]}:{address[1]}")
    server.start()
    try:
        yield recording
    finally:
        server.stop(grace=None)


def _send_raw(port: int, method: str, target: str, correlation_id: str) -> tuple[int, bytes]:
    """One request with the target written byte for byte into the request line."""
    head = (
        f"{method} {target} HTTP/1.1\r\nhost: gateway.test\r\nx-correlation-id: {correlation_id}"
        "\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head.encode("latin-1"))
        # read the reply by its framing, not to the close: Envoy holds the connection of a
        # local reply open for its delayed_close_timeout (1 s) waiting for the client to close
        reply = http.client.HTTPResponse(client, method=method)
        reply.begin()
        try:
            return reply.status, reply.read()
        finally:
            reply.close()


def _logged_routes(stack: GatewayStack, entry: str) -> dict[str, str | None]:
    """correlation id -> the route name Envoy logged (None: no route)."""
    path = stack.access_log_dir / f"{entry}.log"
    routes: dict[str, str | None] = {}
    if not path.exists():
        return routes  # Envoy has not flushed its first line yet
    # only whole lines: the last one may still be being written
    for line in path.read_bytes().split(b"\n")[:-1]:
        record = orjson.loads(line)
        route = record.get("route_id")
        routes[record.get("correlation_id") or ""] = None if route in (None, "", "-") else route
    return routes


def _wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll a condition (local: tests/support's `eventually` is the other branch's to add)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Sent:
    entry: str
    method: str
    target: str
    correlation_id: str
    status: int
    body: bytes


def _send_table(stack: GatewayStack) -> list[Sent]:
    sent = []
    for entry in ENTRY_POINTS:
        for target in TARGETS:
            for method in METHODS:
                correlation_id = str(uuid.uuid4())
                status, body = _send_raw(stack.ports[entry], method, target, correlation_id)
                sent.append(Sent(entry, method, target, correlation_id, status, body))
    return sent


def test_envoy_picks_the_matchers_route_with_the_contracts_facts(
    gateway_stack: GatewayStack, recorder: CheckRecorder
) -> None:
    config = load_gateway_config(gateway_stack.config_path)
    runtime = load_runtime_config(gateway_stack.runtime_config_path)
    sent = _send_table(gateway_stack)
    routed = [s for s in sent if (envoy_path(s.target) or "/ready").split("?")[0] != "/ready"]
    _wait_for(
        lambda: all(s.correlation_id in _logged_routes(gateway_stack, s.entry) for s in routed),
        "every routed request in its Envoy's access log",
        timeout=20,
    )
    logged = {entry: _logged_routes(gateway_stack, entry) for entry in ENTRY_POINTS}
    disagreements = []
    for request in sent:
        entry = config.entry_points[request.entry]
        seen = recorder.seen.get(request.correlation_id, [])
        path = envoy_path(request.target)
        found = (
            None if path is None else match_route(runtime, entry.gateway_type, request.method, path)
        )
        what = f"{request.entry} {request.method} {request.target!r}"
        if path is None:
            envoy = (request.status, seen)
            if envoy != (400, []):
                disagreements.append(f"{what}: Envoy {envoy}, matcher: refused (400)")
            continue
        if path.split("?")[0] == entry.readiness_path:
            # its body says so (a HEAD reply has none)
            readiness = request.method == "HEAD" or b"ready" in request.body
            if (request.status, seen) != (200, []) or not readiness:
                disagreements.append(f"{what}: Envoy {request.status}, not its readiness route")
            continue
        envoy_route = logged[request.entry][request.correlation_id]
        predicted = "no-route" if found is None else found.route_id
        if envoy_route != predicted:
            disagreements.append(f"{what}: Envoy picked {envoy_route}, matcher {predicted}")
            continue
        expected: list[SeenCheck] = []
        if found is not None and not found.rule.public:
            facts = facts_of_route(
                runtime, found.route_id, entry.gateway_type, charges_budget=entry.via is None
            )
            expected = [SeenCheck(request.method, path, facts.to_context_extensions())]
        if seen != expected:
            disagreements.append(f"{what}: Envoy checked {seen}, contract says {expected}")
    assert disagreements == [], f"{len(disagreements)} of {len(sent)}:\n" + "\n".join(
        disagreements[:40]
    )
    # the table reached every kind of answer: checked, public, no route, refused
    statuses = {request.status for request in sent}
    assert {403, 404, 400, 200} <= statuses
    # ... and Envoy checked every kind of rule: segment prefix, exact, regex, plain prefix
    checked = {
        (request.entry, check.context.get("route_id"))
        for request in sent
        for check in recorder.seen.get(request.correlation_id, [])
    }
    kinds = {"orders-list", "orders-create", "profile", "order-item", "exports"}
    assert {("plant", route) for route in kinds} <= checked
    assert {entry for entry, _ in checked} == set(ENTRY_POINTS)
