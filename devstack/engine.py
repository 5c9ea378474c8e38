"""Finds a Docker-compatible engine (Docker or Podman) and the images it already holds.

docker-py is imported only when an engine is asked something: it is a development package,
and `devstack` (e.g. `python -m devstack token`) also runs in the app image, which lacks it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.model import ServiceUnavailable

if TYPE_CHECKING:
    import docker

_DEFAULT_SOCKETS = (
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
    f"{os.environ.get('XDG_RUNTIME_DIR', '/nonexistent')}/podman/podman.sock",
)


def _candidate_hosts() -> list[str]:
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    return [f"unix://{path}" for path in _DEFAULT_SOCKETS if Path(path).exists()]


def _socket_accepts(path: str) -> bool:
    # docker-py leaks its socket when a unix connect is refused; probe with our own first
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _client(url: str, timeout: int) -> docker.DockerClient:
    import docker  # noqa: PLC0415 - a development package, see the module docstring

    return docker.DockerClient(base_url=url, timeout=timeout)


@functools.lru_cache(maxsize=8)
def _answers(url: str) -> bool:
    if url.startswith("unix://") and not _socket_accepts(url.removeprefix("unix://")):
        return False
    import docker.errors  # noqa: PLC0415

    try:
        client = _client(url, timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, OSError):
        return False


def engine_url() -> str | None:
    """The first Docker-compatible engine that answers: $DOCKER_HOST, else the default sockets."""
    return next((url for url in _candidate_hosts() if _answers(url)), None)


def engine_answers() -> bool:
    return engine_url() is not None


def require_engine() -> str:
    url = engine_url()
    if url is None:
        where = ", ".join(_candidate_hosts()) or "DOCKER_HOST (unset) or the default sockets"
        raise ServiceUnavailable(
            f"no Docker-compatible container engine answers at {where}: start Docker or "
            "Podman (podman system service) and set DOCKER_HOST, or use GATEWAY_PROVIDER=local"
        )
    return url


def image_present(image: str) -> bool:
    """Is `image` already in the engine's local store (no pull)?"""
    url = engine_url()
    if url is None:
        return False
    import docker.errors  # noqa: PLC0415

    client = _client(url, timeout=5)
    try:
        for name in (image, f"docker.io/{image}", f"docker.io/library/{image}"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.get(name)
                return True
        return False
    except docker.errors.DockerException:
        return False
    finally:
        client.close()
