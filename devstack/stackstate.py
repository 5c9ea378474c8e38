"""The state file of a running `make up` (var/devstack.json): PIDs, URLs, DSN; and `make down`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "devstack.json"


def start_time(pid: int) -> int | None:
    """The kernel start time of `pid` (guards against signalling a recycled PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


@dataclass
class Tracked:
    """One process `make up` started: it leads its own process group."""

    name: str
    pid: int
    started: int | None = None

    @classmethod
    def of(cls, name: str, pid: int) -> Tracked:
        return cls(name=name, pid=pid, started=start_time(pid))

    def alive(self) -> bool:
        now = start_time(self.pid)
        return now is not None and (self.started is None or now == self.started)


@dataclass
class StackState:
    """What other commands (down, token, demo, tests) need to know about the running stack."""

    supervisor: Tracked
    children: list[Tracked] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    # every port `make up` chose for the gateway's own listeners (devstack.stackconfig.Ports)
    ports: dict[str, int] = field(default_factory=dict)
    database_url: str = ""  # a reader login (gateway_audit_admin): the audit rows, read-only
    audit_journal_dir: str = ""
    shipper_health_url: str = ""
    defaults: list[str] = field(default_factory=list)
    ready: bool = False

    def write(self, var_dir: Path) -> None:
        """Atomically replace the state file; 0600 because it holds the database password."""
        path = var_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
        tmp.replace(path)

    @classmethod
    def read(cls, var_dir: Path) -> StackState | None:
        try:
            raw: dict[str, Any] = json.loads((var_dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        raw["supervisor"] = Tracked(**raw["supervisor"])
        raw["children"] = [Tracked(**child) for child in raw.get("children", [])]
        return cls(**raw)


def _signal_group(process: Tracked, signum: signal.Signals) -> None:
    if not process.alive():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(process.pid, signum)


def _wait_gone(processes: list[Tracked], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(p.alive() for p in processes):
            return True
        time.sleep(0.1)
    return not any(p.alive() for p in processes)


def stop_stack(var_dir: Path, timeout: float = 30.0) -> list[str]:
    """Stop a running stack: SIGTERM the supervisor (it stops its children), then force.

    Returns the names of processes that needed SIGKILL; raises nothing when none is running.
    """
    state = StackState.read(var_dir)
    if state is None:
        return []
    forced: list[str] = []
    supervisor = state.supervisor
    if supervisor.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGTERM)
        if not _wait_gone([supervisor], timeout):
            forced.append(supervisor.name)
            _signal_group(supervisor, signal.SIGKILL)
    # Whatever the supervisor left (it was killed, or crashed earlier): terminate, then kill.
    leftovers = [child for child in state.children if child.alive()]
    for child in leftovers:
        _signal_group(child, signal.SIGTERM)
    if not _wait_gone(leftovers, 10.0):
        for child in leftovers:
            if child.alive():
                forced.append(child.name)
                _signal_group(child, signal.SIGKILL)
        _wait_gone(leftovers, 5.0)
    (var_dir / STATE_FILE).unlink(missing_ok=True)
    return forced
