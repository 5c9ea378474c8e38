"""Pure logic of the provisioning layer: program lookup, provider choice, service addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.model import PostgresService, ServiceUnavailable
from devstack.process import pid_alive
from devstack.programs import find_program
from devstack.services import choose_provider, image_for


class _Idle:
    pid = None
    running = False

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def alive(self) -> bool:
        return False

    def kill(self) -> None: ...


def test_lookup_override_finds_a_program_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "redis-server"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("DEVSTACK_BIN_DIRS", str(tmp_path))
    assert find_program("redis-server") == program


def test_lookup_falls_back_to_known_locations_when_path_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEVSTACK_BIN_DIRS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("OPA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    opa = tmp_path / "cache" / "opa"
    opa.write_text("#!/bin/sh\n")
    opa.chmod(0o755)
    assert find_program("opa") == opa


def test_unknown_program_names_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVSTACK_BIN_DIRS", str(tmp_path))
    with pytest.raises(ServiceUnavailable, match=r"^frobnicate not found: install frobnicate$"):
        find_program("frobnicate")


def test_local_provider_needs_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("GATEWAY_PROVIDER", "LOCAL")
    assert choose_provider("POSTGRES_IMAGE") == "local"


def test_images_default_to_the_official_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPA_IMAGE", raising=False)
    monkeypatch.setenv("ENVOY_IMAGE", "localhost/standin/envoy:v1.40")
    assert image_for("OPA_IMAGE") == "openpolicyagent/opa:1.22.2"
    assert image_for("ENVOY_IMAGE") == "localhost/standin/envoy:v1.40"


def test_dsn_escapes_the_password_and_hides_it_from_repr() -> None:
    pg = PostgresService(control=_Idle(), host="127.0.0.1", port=5433, password="a/b@c")
    assert pg.dsn == "postgresql://postgres:a%2Fb%40c@127.0.0.1:5433/gateway"
    assert pg.dsn_for("postgres").endswith("/postgres")
    assert "a/b@c" not in repr(pg)


def test_pid_alive_tells_a_live_pid_from_a_gone_one() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(2**22 + 1)  # above pid_max's default ceiling
