"""One local service process: start, wait for real readiness, stop by PID, never leak it."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from devstack.model import ServiceUnavailable

_LIVE: set[ManagedProcess] = set()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class ManagedProcess:
    """A child process in its own session, ready-checked on start, terminated then killed."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready: Callable[[], bool],
        alive: Callable[[], bool] | None = None,
        user: int | None = None,
        group: int | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._ready = ready
        self._alive = alive or ready  # readiness that needs no dependency is liveness too
        self._user = user
        self._group = group
        self._stop_signal = stop_signal
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, not the service; we stop it by PID
                user=self._user,
                group=self._group,
                env=self._env,
            )
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceUnavailable(
                    f"{self.name} exited with code {self._proc.returncode} while starting "
                    f"({' '.join(self.argv)}); log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if self._ready():
                return
            time.sleep(0.05)
        raise ServiceUnavailable(
            f"{self.name} not ready after {self._start_timeout:.0f}s; "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def pause(self) -> None:
        """SIGSTOP the whole process group (PostgreSQL's backends too), like a frozen cgroup."""
        if self._proc is not None and self.running:
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self.running:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        """The liveness probe (make up's supervisor restarts a part that keeps failing it)."""
        return self._alive()

    def kill(self) -> None:
        """SIGKILL the whole process group, stopped or not; reaped by `running` or `stop()`."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Send the stop signal, wait, then SIGKILL the whole process group."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(self._stop_timeout)
        # Children left behind by a crashed parent share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_LIVE):
        process.stop()
