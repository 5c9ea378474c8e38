"""The shipper asks Envoy to reopen its logs (TCP or unix socket; again if Envoy missed it),
and tails only the logs of the Envoys beside it."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from authz_service.shipper.access_logs import (
    REOPEN_RETRY_SECONDS,
    AccessLogReader,
    Stream,
    load_manifest,
    post_admin,
    rotated,
)
from authz_service.shipper.model import Progress


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


def _ship_all(reader: AccessLogReader, progress: Progress) -> None:
    """What a round does: read, batch everything, commit, then the after-commit work."""
    for item in reader.read(reader.snapshot(), 10_000):
        progress.add(item)
        item.batched = item.row is not None
    progress.commit(progress.prospective())
    reader.after_commit()


def test_a_rotation_asks_envoy_at_once_and_again_while_idle(
    tmp_path: Path, unix_admin: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rotations in quick succession each ask for a reopen; one Envoy missed is asked for
    again without waiting for another commit (an idle shipper commits nothing)."""
    admin, seen = unix_admin
    stream = Stream("plant", "PLANT", tmp_path / "plant.log", admin)
    progress = Progress()
    reader = AccessLogReader([stream], progress, rotate_bytes=4096)
    line = orjson.dumps({"request_id": "r", "gateway_type": "PLANT", "pad": "x" * 1000}) + b"\n"
    stream.path.write_bytes(line * 5)
    _ship_all(reader, progress)
    assert seen == ["/reopen_logs"]  # rotated: generation 1 renamed, Envoy asked
    assert rotated(stream, 1).exists()
    stream.path.write_bytes(line * 5)  # Envoy reopened, and wrote past the size again
    _ship_all(reader, progress)  # generation 1 finished and removed, generation 2 read
    _ship_all(reader, progress)
    assert rotated(stream, 2).exists()
    assert seen == ["/reopen_logs"] * 2, "the second rotation asks at once, not a second later"
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + REOPEN_RETRY_SECONDS)
    reader.retry_reopen()  # Envoy missed it: nothing to commit, asked again all the same
    assert seen == ["/reopen_logs"] * 3
    stream.path.write_bytes(b"")  # reopened now
    reader.retry_reopen()
    assert len(seen) == 3
