"""Helpers of the HTTP transport's tests: the service as real processes, raw HTTP/1.1 on sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from authz_service.audit.framing import decode_record, read_frames
from gateway_contract.headers import ROUTE_FACTS_HEADER
from gateway_contract.route_facts import RouteFacts
from tests.support.free_ports import free_port
from tests.support.issuers import hs256_token, issuers_json
from tests.support.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {
    "revision": "it-http",
    "rbac": {"PLANT": {"customer": ["reports:read"]}, "CP": {}, "PP": {}},
    "routes": {},
    "budgets": {"plans": {"standard": {"reports": {"day": 1000}}}},
}
# the route's facts, in the HTTP rendering here and the gRPC one in test_authz_workers.py
FACTS = RouteFacts(
    gateway_type="PLANT",
    route_id="reports",
    permission="reports:read",
    policy="gateway/authz",
    paid_only=False,
    budget_metric="reports",
    budget_cost=1,
    config_revision="it-http",
)
FACTS_HEADER = f"{ROUTE_FACTS_HEADER}: {FACTS.to_route_metadata()}"
START_TIMEOUT_S = 30.0


def token(customer: str | None = None, **claims: Any) -> str:
    """A valid token; its own customer (own budget) unless one is named."""
    customer = customer or f"cust-{uuid.uuid4().hex[:12]}"
    return hs256_token("user-http", ["customer"], customer, **claims)


def http_check(
    *,
    method: str = "GET",
    path: str = "/api/v1/reports",
    bearer: str | None = None,
    correlation_id: str = "",
    extra: str = "",
) -> bytes:
    """A check as Envoy's http_service sends it (the route's facts in their header)."""
    lines = [f"{method} /check{path} HTTP/1.1", "host: authz", "content-length: 0", FACTS_HEADER]
    if bearer is not None:
        lines.append(f"authorization: Bearer {bearer}")
    if correlation_id:
        lines.append(f"x-correlation-id: {correlation_id}")
    lines.append("x-client-ip: 203.0.113.7")  # what Envoy's Lua filter vouches for
    text = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return text.encode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(stream: BinaryIO, *, head: bool = False) -> Reply:
    """One HTTP/1.1 response from a socket's file (keep-alive: exactly its bytes)."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("the connection closed before an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    return Reply(status, headers, stream.read(length))


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@dataclass
class ServiceProcess:
    """`python -m authz_service serve` (a supervisor when workers > 1), HTTP only."""

    port: int
    journal_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def exchange(self, request: bytes, *, head: bool = False) -> Reply:
        with self.connect() as sock, sock.makefile("rb") as stream:
            sock.sendall(request)
            return read_reply(stream, head=head)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return sorted(int(pid) for pid in children.read_text().split()) if children.exists() else []

    def listening_workers(self) -> list[int]:
        """The workers that hold a listening socket on the port (so new connections reach them)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(f"socket:[{fields[9]}]")
        listening = []
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd")
                if any(os.readlink(fd) in inodes for fd in fds.iterdir()):
                    listening.append(pid)
        return listening

    def wait_for_workers(self, count: int) -> None:
        wait_until(lambda: len(self.listening_workers()) == count, f"{count} workers listening")

    def serving(self) -> bool:
        try:
            reply = self.exchange(b"GET /health HTTP/1.1\r\nhost: authz\r\n\r\n")
        except OSError:
            return False
        return reply.status == 200

    def journal_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for segment in sorted(self.journal_dir.glob("*/*.journal")):
            frames = read_frames(segment.read_bytes(), 0)
            rows.extend(decode_record(payload) for _, payload in frames.payloads)
        return rows

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def wait_until(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    eventually(check, timeout, what=what, ignore=())


@contextlib.contextmanager
def service_process(workdir: Path, env: dict[str, str]) -> Iterator[ServiceProcess]:
    runtime = workdir / "runtime.json"
    runtime.write_text(json.dumps(RUNTIME))
    port = free_port()
    settings = {
        "AUTHZ_HTTP_ADDRESS": f"127.0.0.1:{port}",
        "AUTHZ_GRPC_ADDRESS": "",
        "AUTHZ_RUNTIME_CONFIG": str(runtime),
        "AUTHZ_JWT_ISSUERS": issuers_json(),
        "AUTHZ_POLICY_DIR": str(REPO_ROOT / "policies"),
        "AUTHZ_AUDIT_JOURNAL_DIR": str(workdir / "journal"),
        "AUTHZ_AUDIT_FSYNC": "off",
        "AUTHZ_METRICS_ADDRESS": "",
        "AUTHZ_ADMIN_ADDRESS": "",
        "AUTHZ_POLICY_CACHE_SECONDS": "0",
        **env,
    }
    log_path = workdir / "authz.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "authz_service", "serve"],
            cwd=REPO_ROOT,
            env={**os.environ, **settings},
            stdout=log,
            stderr=log,
        )
    service = ServiceProcess(port, workdir / "journal", process, log_path, settings)
    try:

        def serving() -> bool:
            assert process.poll() is None, f"the service exited with {process.returncode}"
            return service.serving()

        wait_until(serving, "the HTTP /health")
        yield service
    except AssertionError:
        raise AssertionError(log_path.read_text(errors="replace")[-3000:]) from None
    finally:
        service.stop()
