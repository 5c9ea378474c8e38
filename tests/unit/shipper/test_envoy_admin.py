"""The shipper reaches Envoy's admin over TCP or a unix socket, and tails only its own logs."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from authz_service.shipper.access_logs import load_manifest, post_admin


class _Admin(http.server.BaseHTTPRequestHandler):
    """Answers POST /reopen_logs like Envoy's admin; anything else 404."""

    seen: list[str] = []  # noqa: RUF012 - one server per test

    def do_POST(self) -> None:
        self.seen.append(self.path)
        self.send_response(200 if self.path == "/reopen_logs" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass  # (its default names the peer, which a unix socket does not have)


@pytest.fixture
def unix_admin(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    path = tmp_path / "plant-admin.sock"
    _Admin.seen = []
    server = socketserver.UnixStreamServer(str(path), _Admin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix:{path}", _Admin.seen
    finally:
        server.shutdown()
        server.server_close()


def test_reopen_logs_goes_over_a_unix_socket(unix_admin: tuple[str, list[str]]) -> None:
    admin, seen = unix_admin
    assert post_admin(admin, "/reopen_logs") == 200
    assert post_admin(admin, "/quitquitquit") == 404
    assert seen == ["/reopen_logs", "/quitquitquit"]


def test_reopen_logs_goes_over_tcp() -> None:
    _Admin.seen = []
    with http.server.HTTPServer(("127.0.0.1", 0), _Admin) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert post_admin(f"127.0.0.1:{server.server_address[1]}", "/reopen_logs") == 200
        finally:
            server.shutdown()
    assert _Admin.seen == ["/reopen_logs"]


def test_a_missing_socket_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        post_admin(f"unix:{tmp_path / 'gone.sock'}", "/reopen_logs")


def _manifest(tmp_path: Path) -> Path:
    entries = [
        {"name": name, "gateway_type": name.upper(), "path": f"/logs/{name}.log",
         "admin": f"unix:/logs/{name}-admin.sock"}
        for name in ("plant", "cp", "pp")
    ]  # fmt: skip
    path = tmp_path / "access_logs.json"
    path.write_bytes(orjson.dumps({"access_logs": entries}))
    return path


def test_a_pod_tails_only_its_own_envoys_log(tmp_path: Path) -> None:
    streams = load_manifest(_manifest(tmp_path), ("cp",))
    assert [(s.name, str(s.path), s.admin) for s in streams] == [
        ("cp", "/logs/cp.log", "unix:/logs/cp-admin.sock")
    ]
    assert len(load_manifest(_manifest(tmp_path))) == 3


def test_an_entry_point_the_manifest_lacks_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no access log 'qa' \(listed: plant, cp, pp\)"):
        load_manifest(_manifest(tmp_path), ("cp", "qa"))
