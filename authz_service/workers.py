"""AUTHZ_WORKERS=N: a supervisor starts N serving processes, restarts a dead one, stops all.

The workers bind the same HTTP (and gRPC) port with SO_REUSEPORT, so the kernel spreads
Envoy's connections over them. SIGTERM/SIGINT are passed on and waited for (each worker
drains and flushes its journal); SIGHUP is passed on (every worker reloads). A worker that
exits with status 2 (its configuration is invalid) stops the whole group with status 2: a
restart would fail the same way. A worker whose event loop stops beating for
AUTHZ_WORKER_HANG_SECONDS (blocked, or stopped) is killed and restarted: alive but hung, it
would keep its share of the port's new connections, each check on them a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from authz_service.settings import Settings

log = logging.getLogger(__name__)

CONFIG_ERROR = 2
_RESTART_BACKOFF_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
_HEALTHY_AFTER_SECONDS = 30.0  # a worker alive this long resets its backoff
_POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 1.0  # a worker's event loop writes a byte this often
_FIRST_BEAT_SECONDS = 30.0  # a starting worker imports and builds before its loop beats


def _ignore_sighup() -> None:
    """In the child before exec: a reload signal passed on while the worker still starts must
    not kill it (SIGHUP's default); its server installs the reload handler once it serves, and
    a worker starting now reads the current configuration anyway."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    heartbeat: int = -1  # the read end of its heartbeat pipe
    beat_at: float | None = None  # monotonic time of its last beat (None: none yet)

    def silent_for(self, now: float) -> float:
        """Seconds since its loop last beat (a starting worker gets _FIRST_BEAT_SECONDS)."""
        if self.beat_at is None:
            return now - self.started_at - _FIRST_BEAT_SECONDS
        return now - self.beat_at

    def close_heartbeat(self) -> None:
        if self.heartbeat >= 0:
            os.close(self.heartbeat)
            self.heartbeat = -1


async def beat(fd: int) -> None:
    """In a worker: a byte every HEARTBEAT_SECONDS from its event loop, which a hung loop (or
    a stopped process) stops; the supervisor kills a worker silent for too long."""
    os.set_blocking(fd, False)
    while True:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(fd, b".")
        await asyncio.sleep(HEARTBEAT_SECONDS)


@dataclass
class Supervisor:
    settings: Settings
    workers: list[_Worker] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)
    exit_status: int | None = None

    def _spawn(self, worker: _Worker) -> None:
        worker.close_heartbeat()
        worker.heartbeat, beats = os.pipe()
        os.set_blocking(worker.heartbeat, False)
        env = {**os.environ, "AUTHZ_WORKER_INDEX": str(worker.index), "AUTHZ_WORKERS": "1",
               "AUTHZ_WORKER_HEARTBEAT_FD": str(beats)}  # fmt: skip
        argv = [sys.executable, "-m", "authz_service", "serve"]
        try:
            # the supervisor runs no thread, so a function before exec is safe here
            worker.process = subprocess.Popen(
                argv,
                env=env,
                preexec_fn=_ignore_sighup,  # noqa: PLW1509
                pass_fds=(beats,),
            )
        finally:
            os.close(beats)
        worker.started_at = time.monotonic()
        worker.restart_at, worker.beat_at = None, None
        log.info("worker started", extra={"worker": worker.index, "pid": worker.process.pid})

    def _reap(self, now: float) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            status = process.returncode
            worker.process = None
            worker.close_heartbeat()
            if status == CONFIG_ERROR:
                log.error("worker %d: invalid configuration; stopping every worker", worker.index)
                self.exit_status = CONFIG_ERROR
                return
            if now - worker.started_at > _HEALTHY_AFTER_SECONDS:
                worker.failures = 0
            delay = _RESTART_BACKOFF_SECONDS[
                min(worker.failures, len(_RESTART_BACKOFF_SECONDS) - 1)
            ]
            worker.failures += 1
            worker.restart_at = now + delay
            log.warning(
                "worker %d exited with %s; restarting in %.1f s", worker.index, status, delay
            )

    def _listen(self, readable: list[int], now: float) -> None:
        """Note the beats that arrived; kill a worker whose loop has been silent too long."""
        for worker in self.workers:
            if worker.heartbeat in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(worker.heartbeat, 4096)
                worker.beat_at = now
            hang = self.settings.worker_hang_seconds
            if worker.process is None or not hang or worker.silent_for(now) <= hang:
                continue
            log.error(
                "worker %d (PID %d) hung: no heartbeat for %.1f s; killed, to be restarted",
                worker.index, worker.process.pid, worker.silent_for(now),
            )  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()  # reaped and restarted like any dead worker
            worker.beat_at = now  # one kill per silence

    def _restart_due(self, now: float) -> None:
        for worker in self.workers:
            if (
                worker.process is None
                and worker.restart_at is not None
                and now >= worker.restart_at
            ):
                self._spawn(worker)

    def _send(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def _stop_all(self) -> None:
        """SIGTERM each worker and wait for its drain; SIGKILL what outlives it."""
        self._send(signal.SIGTERM)
        wait = self.settings.shutdown_drain_seconds + self.settings.shutdown_grace_seconds + 10
        deadline = time.monotonic() + wait
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killed", worker.index)
                worker.process.kill()
                worker.process.wait()

    def run(self) -> int:
        reader, writer = os.pipe()
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        previous_fd = signal.set_wakeup_fd(writer)

        def note(signum: int, _frame: FrameType | None) -> None:
            self.signals.append(signum)

        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = {signum: signal.signal(signum, note) for signum in handled}
        try:
            self.workers = [_Worker(index) for index in range(self.settings.workers)]
            for worker in self.workers:
                self._spawn(worker)
            return self._loop(reader)
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(reader)
            os.close(writer)
            for worker in self.workers:
                worker.close_heartbeat()

    def _loop(self, reader: int) -> int:
        while True:
            hearts = [w.heartbeat for w in self.workers if w.heartbeat >= 0]
            readable, _, _ = select.select([reader, *hearts], [], [], _POLL_SECONDS)
            with contextlib.suppress(BlockingIOError):
                os.read(reader, 512)
            received, self.signals = self.signals, []
            if signal.SIGTERM in received or signal.SIGINT in received:
                log.info("stopping every worker")
                return 0
            if signal.SIGHUP in received:
                self._send(signal.SIGHUP)
            now = time.monotonic()
            self._listen(readable, now)
            self._reap(now)
            if self.exit_status is not None:
                return self.exit_status
            self._restart_due(now)


def supervise(settings: Settings) -> int:
    """Run the group until SIGTERM/SIGINT; the exit status of the supervisor."""
    return Supervisor(settings).run()
