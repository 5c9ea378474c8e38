"""The containers provider: the same services via testcontainers on a Docker-compatible engine."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psycopg
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from devstack.engine import require_engine
from devstack.free_ports import LOOPBACK, free_port
from devstack.local import REDIS_PERSISTENCE, envoy_flags
from devstack.model import (
    EnvoyService,
    OpaService,
    PostgresService,
    RedisService,
    ServiceUnavailable,
)
from devstack.probes import http_get, postgres_answers, redis_answers

# We remove our containers ourselves (by id, in `finally`); Ryuk would need one more image.
if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
    testcontainers_config.ryuk_disabled = True


class ContainerControl:
    """Stops/starts one container (keeping its ports and filesystem) and removes it at the end."""

    def __init__(self, container: DockerContainer, ready: Callable[[], bool]) -> None:
        self._container = container
        self._ready = ready
        self._created = False

    def _wrapped(self) -> Any:
        return self._container.get_wrapped_container()

    @property
    def pid(self) -> int | None:
        if not self._created:
            return None
        self._wrapped().reload()
        pid = int(self._wrapped().attrs["State"]["Pid"])
        return pid or None

    @property
    def running(self) -> bool:
        if not self._created:
            return False
        self._wrapped().reload()
        return bool(self._wrapped().status == "running")

    def start(self, timeout: float = 120.0) -> None:
        image = self._container.image
        try:
            if self._created:
                self._wrapped().start()
            else:
                self._created = True
                self._container.start()
        except docker.errors.DockerException as error:
            raise ServiceUnavailable(
                f"cannot run image {image} on the container engine ({error}); pull it "
                f"(docker pull {image}) or use GATEWAY_PROVIDER=local"
            ) from error
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            if not self.running:
                break
            time.sleep(0.1)
        raise ServiceUnavailable(f"container {image} not ready; logs:\n{self._logs()}")

    def _logs(self) -> str:
        try:
            out, err = self._container.get_logs()
        except docker.errors.DockerException:
            return "(no logs)"
        text = (out + err).decode(errors="replace")
        return "\n".join(text.splitlines()[-30:])

    def stop(self) -> None:
        if self._created:
            self._wrapped().stop(timeout=10)

    def pause(self) -> None:
        """The engine freezes the container's cgroup (no signal: works across PID namespaces)."""
        if self._created:
            self._wrapped().pause()

    def resume(self) -> None:
        if self._created:
            self._wrapped().unpause()

    def alive(self) -> bool:
        """Its readiness probe: each container's answers without its dependencies."""
        return self._ready()

    def kill(self) -> None:
        """SIGKILL the container (a paused one too); `start()` starts it again."""
        if self._created:
            with contextlib.suppress(docker.errors.DockerException):
                if self._wrapped().status == "paused":
                    self._wrapped().unpause()
                self._wrapped().kill()

    def remove(self) -> None:
        if self._created:
            with contextlib.suppress(docker.errors.DockerException):
                self._container.stop(force=True, delete_volume=True)


def _container(image: str, service: str) -> DockerContainer:
    url = require_engine()
    container = DockerContainer(image, docker_client_kw={"environment": {"DOCKER_HOST": url}})
    return container.with_name(f"devstack-{service}-{uuid.uuid4().hex[:8]}")


def _publish(container: DockerContainer, container_port: int) -> int:
    """Publish on a fixed loopback host port so a restart keeps the same address."""
    host_port = free_port()
    ports: dict[str, Any] = container.ports
    ports[f"{container_port}/tcp"] = (LOOPBACK, host_port)
    return host_port


@contextlib.contextmanager
def _running(control: ContainerControl) -> Iterator[None]:
    try:
        control.start()
        yield
    finally:
        control.remove()


@contextlib.contextmanager
def postgres(workdir: Path, image: str, *, fsync: bool = True) -> Iterator[PostgresService]:
    """PostgreSQL from `image` (official env contract); pg_cron preloaded when the image has it."""
    del workdir  # data lives in the container's volume, removed with it
    password = uuid.uuid4().hex
    container = _container(image, "postgres").with_envs(
        POSTGRES_PASSWORD=password, POSTGRES_DB="gateway"
    )
    port = _publish(container, 5432)
    durability = "on" if fsync else "off"
    container.with_command(
        ["postgres", "-c", f"fsync={durability}", "-c", f"synchronous_commit={durability}",
         "-c", f"full_page_writes={durability}"]
    )  # fmt: skip
    conninfo = psycopg.conninfo.make_conninfo(
        host=LOOPBACK, port=port, user="postgres", password=password, dbname="gateway"
    )
    control = ContainerControl(container, lambda: postgres_answers(conninfo))
    with _running(control):
        pg_cron = _has_pg_cron(conninfo)
        if pg_cron:
            # Both settings are read at server start, and PostgreSQL only accepts the second
            # once pg_cron is loaded: hence two restarts (the image cannot be assumed to let
            # us pass them at first start).
            # (jobs run in background workers: the retention login needs no password)
            for settings in (
                ("shared_preload_libraries = 'pg_cron'",),
                ("cron.database_name = 'gateway'", "cron.use_background_workers = on"),
            ):
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    for setting in settings:
                        conn.execute(f"ALTER SYSTEM SET {setting}")
                control.stop()
                control.start()
        yield PostgresService(
            control=control, host=LOOPBACK, port=port, password=password, pg_cron=pg_cron
        )


def _has_pg_cron(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'"
        ).fetchone()
    return row is not None and row[0] > 0


@contextlib.contextmanager
def redis_server(workdir: Path, image: str) -> Iterator[RedisService]:
    del workdir
    container = _container(image, "redis")
    port = _publish(container, 6379)
    container.with_command(["redis-server", *REDIS_PERSISTENCE, "--protected-mode", "no"])
    control = ContainerControl(container, lambda: redis_answers(LOOPBACK, port))
    with _running(control):
        yield RedisService(control=control, host=LOOPBACK, port=port)


@contextlib.contextmanager
def opa(workdir: Path, policy_dir: Path | None, image: str) -> Iterator[OpaService]:
    del workdir
    container = _container(image, "opa")
    port = _publish(container, 8181)
    command = ["run", "--server", "--addr", "0.0.0.0:8181", "--skip-version-check",
               "--log-level", "error"]  # fmt: skip
    if policy_dir is not None:
        container.with_volume_mapping(str(policy_dir.resolve()), "/policies", "ro")
        command.append("/policies")
    container.with_command(command)
    control = ContainerControl(
        container, lambda: http_get(f"http://{LOOPBACK}:{port}/health")[0] == 200
    )
    with _running(control):
        yield OpaService(control=control, host=LOOPBACK, port=port)


@contextlib.contextmanager
def envoy(
    workdir: Path,
    config_path: Path,
    image: str,
    *,
    name: str,
    concurrency: int = 1,
    log_dir: Path | None = None,
) -> Iterator[EnvoyService]:
    """Envoy in the host's network namespace, so the config's 127.0.0.1 ports are the host's.

    `log_dir`: where the rendered config writes its access logs (mounted read-write)."""
    home = (workdir / "envoy").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = config_path.resolve()
    address_file = home / f"{name}.admin-address"
    address_file.unlink(missing_ok=True)
    command = ["-c", str(config), "--use-dynamic-base-id",
               "--admin-address-path", str(address_file),
               "--concurrency", str(concurrency), *envoy_flags(config)]  # fmt: skip
    container = (
        _container(image, f"envoy-{name}")
        # our own entrypoint: root in the container may write the admin address into `home`
        .with_kwargs(network_mode="host", entrypoint=["envoy"])
        .with_volume_mapping(str(config.parent), str(config.parent), "ro")
        .with_volume_mapping(str(home), str(home), "rw")
        .with_command(command)
    )
    if log_dir is not None:
        logs = log_dir.resolve()
        logs.mkdir(parents=True, exist_ok=True)
        container = container.with_volume_mapping(str(logs), str(logs), "rw")

    def admin_url() -> str | None:
        with contextlib.suppress(OSError):
            address = address_file.read_text().strip()
            return f"http://{address}" if address else None
        return None

    def ready() -> bool:
        url = admin_url()
        return url is not None and http_get(f"{url}/ready") == (200, "LIVE\n")

    control = ContainerControl(container, ready)
    with _running(control):
        url = admin_url()
        assert url is not None
        yield EnvoyService(
            control=control, name=name, admin_url=url, log_path=f"container {container.image}"
        )
