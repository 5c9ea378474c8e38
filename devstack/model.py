"""The service handles returned by the provisioning layer and its one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote


class ServiceUnavailable(RuntimeError):  # noqa: N818 - the name is the documented contract
    """A service could not be provided; the message says what to install or start."""


class ServiceControl(Protocol):
    """Stops and starts one running service (a local process or a container)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def alive(self) -> bool:
        """Liveness: does the process itself answer (never: are its dependencies up)?"""
        ...

    def kill(self) -> None:
        """SIGKILL every process of the service (a stopped one too); `running` turns False."""
        ...


@dataclass(frozen=True, kw_only=True)
class ManagedService:
    """Common controls: stop and start again on the same port and data."""

    control: ServiceControl = field(repr=False, compare=False)

    @property
    def pid(self) -> int | None:
        """PID of the local process (the container's main process for containers)."""
        return self.control.pid

    @property
    def running(self) -> bool:
        return self.control.running

    def stop(self) -> None:
        """Stop the service, keeping its port and data for `start()`."""
        self.control.stop()

    def start(self) -> None:
        """Start a stopped service again and wait until it is ready."""
        self.control.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze every process of the service: its port still accepts, nothing answers (a hung
        dependency). The same under both providers; `resume()` undoes it."""
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()


@dataclass(frozen=True, kw_only=True)
class PostgresService(ManagedService):
    host: str
    port: int
    password: str = field(repr=False)
    user: str = "postgres"
    database: str = "gateway"
    pg_cron: bool = False

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """DSN of another database on the same server (e.g. "postgres")."""
        secret = quote(self.password, safe="")
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"


@dataclass(frozen=True, kw_only=True)
class RedisService(ManagedService):
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


@dataclass(frozen=True, kw_only=True)
class OpaService(ManagedService):
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class EnvoyService(ManagedService):
    name: str
    admin_url: str
    log_path: str
