"""The HTTP ext_authz transport against hostile clients: two real workers, real Redis and OPA.

Malformed request lines, oversized heads, bodies, a slow client, pipelining, a reset in the
middle of a check: each gets a refusal or its own answer, never an allow, and no worker dies
(their PIDs are the same before and after every test).
"""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import OpaService, RedisService
from gateway_contract.http_check import HTTP_UNAVAILABLE_STATUS
from tests.integration._http_authz import (
    FACTS_HEADER,
    ServiceProcess,
    closed_by_peer,
    http_check,
    read_reply,
    service_process,
    token,
    wait_until,
)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, redis_service: RedisService, opa_service: OpaService
) -> Iterator[ServiceProcess]:
    env = {
        "AUTHZ_WORKERS": "2",
        "AUTHZ_REDIS_URL": redis_service.url,
        "AUTHZ_OPA_URL": opa_service.url,
        "AUTHZ_HTTP_HEADER_TIMEOUT_SECONDS": "1",
        "AUTHZ_HTTP_MAX_HEADERS": "32",
        "AUTHZ_HTTP_MAX_HEAD_BYTES": "16384",
    }
    with service_process(tmp_path_factory.mktemp("http"), env) as running:
        running.wait_for_workers(2)
        yield running


@pytest.fixture(autouse=True)
def no_worker_dies(service: ServiceProcess) -> Iterator[None]:
    before = service.worker_pids()
    yield
    assert service.worker_pids() == before, "a hostile client must not kill a worker"
    assert service.serving()


def test_a_valid_check_is_allowed_with_identity_headers(service: ServiceProcess) -> None:
    correlation = str(uuid.uuid4())
    reply = service.exchange(http_check(bearer=token(), correlation_id=correlation))
    assert reply.status == 200
    assert reply.headers["x-user-id"] == "user-http"
    assert reply.headers["x-correlation-id"] == correlation
    assert reply.headers["x-authz-decision"] == "allow"
    assert reply.body == b""


def test_a_denial_is_a_problem_with_the_correlation_id(service: ServiceProcess) -> None:
    correlation = str(uuid.uuid4())
    reply = service.exchange(http_check(correlation_id=correlation))
    assert reply.status == 401
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.headers["x-correlation-id"] == correlation
    body = reply.json()
    assert (body["code"], body["instance"], body["correlation_id"]) == (
        "token_missing",
        "/api/v1/reports",
        correlation,
    )


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    service: ServiceProcess,
) -> None:
    good = token()
    sent = [(str(uuid.uuid4()), good if i % 3 else None) for i in range(12)]
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(b"".join(http_check(bearer=b, correlation_id=c) for c, b in sent))
        replies = [read_reply(stream) for _ in sent]
        # the same connection still takes requests afterwards
        sock.sendall(http_check(bearer=good, correlation_id="after"))
        after = read_reply(stream)
    assert [r.headers["x-correlation-id"] for r in replies] == [c for c, _ in sent]
    assert [r.status for r in replies] == [200 if b else 401 for _, b in sent]
    assert after.status == 200


def test_a_head_denial_has_no_body_and_the_connection_goes_on(service: ServiceProcess) -> None:
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(http_check(method="HEAD") + http_check(bearer=token()))
        head = read_reply(stream, head=True)
        after = read_reply(stream)
    assert head.status == 401
    assert int(head.headers["content-length"]) > 0, "the length of the body it would have"
    assert after.status == 200, "no stray body bytes before the next answer"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /check/x HTTP/9.9\r\n\r\n",
        b"GET /check/x HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /check/x HTTP/1.1\r\nx-a: \x00\x01\r\n\r\n",
        b"GET /check/\x7f HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET /check/x HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    ],
    ids=["garbage", "version", "header-without-colon", "control-bytes", "del-in-target", "tls",
         "upgrade"],
)  # fmt: skip
def test_a_malformed_request_gets_400_and_the_connection_closes(
    service: ServiceProcess, request_bytes: bytes
) -> None:
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(request_bytes)
        reply = read_reply(stream)
        assert reply.status == 400
        assert reply.json()["type"].endswith("/bad_request")
        assert closed_by_peer(sock)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("".join(f"x-h{i}: v\r\n" for i in range(40)), 431),
        ("x-big: " + "a" * 20000 + "\r\n", 431),
        ("content-length: 5\r\n", 400),
        ("transfer-encoding: chunked\r\n", 400),
    ],
    ids=["too-many-headers", "oversized-header", "content-length-body", "chunked-body"],
)
def test_oversized_heads_and_bodies_are_refused_and_closed(
    service: ServiceProcess, extra: str, status: int
) -> None:
    request = http_check(bearer=token()).replace(b"content-length: 0\r\n", b"")
    request = request[:-2] + extra.encode() + b"\r\n" + (b"hello" if "length: 5" in extra else b"")
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(request)
        reply = read_reply(stream)
        assert reply.status == status
        assert closed_by_peer(sock)


def test_the_answers_before_a_malformed_request_still_arrive(service: ServiceProcess) -> None:
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(http_check(bearer=token(), correlation_id="first") + b"GARBAGE\r\n\r\n")
        first = read_reply(stream)
        refusal = read_reply(stream)
        assert (first.status, first.headers["x-correlation-id"]) == (200, "first")
        assert refusal.status == 400
        assert closed_by_peer(sock)


def test_a_slow_client_gets_408_and_is_closed(service: ServiceProcess) -> None:
    with service.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /check/api/v1/reports HTTP/1.1\r\nhost: a")  # and then nothing
        reply = read_reply(stream)
        assert reply.status == 408
        assert closed_by_peer(sock)


def test_a_client_that_never_reads_does_not_hold_the_worker(service: ServiceProcess) -> None:
    """Pipelined checks, none read: the server stops reading it (bounded memory) within a
    few MB of socket buffers, and other clients are still served."""
    request = http_check(bearer=token())
    bound = 100_000  # ~35 MB: far past what the socket buffers of both ends hold
    with service.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(0.5)
        sent = 0
        while sent < bound:
            try:
                sock.sendall(request)
            except TimeoutError:
                break
            sent += 1
        assert sent < bound, "the server kept reading a client that never reads its answers"
        assert service.exchange(http_check(bearer=token())).status == 200


def test_unknown_paths_are_404_and_health_reports_components(service: ServiceProcess) -> None:
    assert service.exchange(b"GET /api/v1/reports HTTP/1.1\r\n\r\n").status == 404
    assert service.exchange(b"POST /health HTTP/1.1\r\ncontent-length: 0\r\n\r\n").status == 404
    health = service.exchange(b"GET /health HTTP/1.1\r\n\r\n")
    assert health.status == 200
    assert health.json()["components"] == {
        "authz.audit": True,
        "authz.opa": True,
        "authz.redis": True,
    }
    assert service.exchange(b"GET /health/authz.redis HTTP/1.1\r\n\r\n").status == 200
    assert service.exchange(b"GET /health/nothing HTTP/1.1\r\n\r\n").status == 404


def test_route_facts_sent_twice_fail_closed(service: ServiceProcess) -> None:
    """Envoy sends the facts once, overriding any client copy; twice is ambiguous: no facts,
    so no permission is known and the check is refused."""
    reply = service.exchange(http_check(bearer=token(), extra=FACTS_HEADER + "\r\n"))
    assert reply.status == HTTP_UNAVAILABLE_STATUS  # Envoy's mapper makes it the client's 503
    assert (reply.json()["code"], reply.json()["status"]) == ("route_misconfigured", 503)


@dataclass
class MuteEngine:
    """A policy engine URL that accepts connections, reads the queries, never answers."""

    url: str
    received: list[bytes]

    def asked(self) -> bool:
        return any(b"POST /v1/data/" in chunk for chunk in list(self.received))


@pytest.fixture
def mute_engine() -> Iterator[MuteEngine]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    received: list[bytes] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def read(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            received.append(chunk)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            held.append(conn)
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield MuteEngine(f"http://127.0.0.1:{listener.getsockname()[1]}", received)
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for conn in [*held, listener]:
            conn.close()


@pytest.fixture
def stalled_service(tmp_path: Path, mute_engine: MuteEngine) -> Iterator[ServiceProcess]:
    """One worker whose policy engine never answers."""
    env = {
        "AUTHZ_OPA_URL": mute_engine.url,
        "AUTHZ_OPA_TIMEOUT_SECONDS": "5",
        "AUTHZ_CHECK_TIMEOUT_SECONDS": "8",
    }
    with service_process(tmp_path, env) as running:
        yield running


def test_a_reset_mid_check_is_journaled_as_cancelled_and_never_allowed(
    stalled_service: ServiceProcess, mute_engine: MuteEngine
) -> None:
    pids = stalled_service.worker_pids()
    correlation = str(uuid.uuid4())
    sock = stalled_service.connect()
    sock.sendall(http_check(bearer=token(), correlation_id=correlation))
    wait_until(mute_engine.asked, "the check waiting on the policy engine", 10)
    # RST instead of FIN: SO_LINGER with a zero timeout
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_until(lambda: _journal_has(stalled_service, correlation), "the cancelled record", 10)
    row = next(r for r in stalled_service.journal_rows() if r["correlation_id"] == correlation)
    assert (row["decision"], row["problem_type"], row["denied_stage"]) == (
        "cancelled",
        "check_cancelled",
        "policy",
    )
    assert stalled_service.worker_pids() == pids
    assert stalled_service.serving()


def _journal_has(service: ServiceProcess, correlation: str) -> bool:
    return any(r.get("correlation_id") == correlation for r in service.journal_rows())
