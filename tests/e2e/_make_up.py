"""`make up` as a user runs it, for the e2e tests: started in its own var/ and build/ dirs,
its output read line by line, stopped with SIGINT; requests and audit rows of its stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import pytest

from devstack.stackstate import StackState
from devstack.up import READY_LINE

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0


@dataclass
class Running:
    """A running `make up`: its process, what it printed so far, its var dir and state file."""

    make: subprocess.Popen[str]
    output: list[str]
    var_dir: Path
    state: StackState
    lines: queue.Queue[str | None]

    def refresh(self) -> StackState:
        """Read the state file again (a restarted part has a new PID in it)."""
        state = StackState.read(self.var_dir)
        assert state is not None, f"make up exited:\n{self.read_output()}"
        self.state = state
        return state

    def read_output(self) -> str:
        """Everything printed so far, the lines since the last call included."""
        with contextlib.suppress(queue.Empty):
            while (line := self.lines.get_nowait()) is not None:
                self.output.append(line)
        return "\n".join(self.output)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _wait_ready(make: subprocess.Popen[str], lines: queue.Queue[str | None]) -> list[str]:
    output: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            pytest.fail(f"make up exited ({make.wait()}) before ready:\n" + "\n".join(output))
        output.append(line)
        if line.startswith(READY_LINE):
            return output
    pytest.fail("make up not ready in time:\n" + "\n".join(output))


def group_members(leaders: set[int]) -> set[int]:
    """PIDs of live processes whose process group is one of `leaders` (e.g. postgres workers)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in leaders:
            members.add(int(entry.name))
    return members


@contextlib.contextmanager
def make_up(work: Path, up_args: str) -> Iterator[Running]:
    """`make up UP_ARGS=...` with its own var/ and build/ dirs, stopped with SIGINT after."""
    var_dir = work / "var"
    up_args = f"{up_args} --build-dir {work / 'build'}"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "up", f"VAR_DIR={var_dir}", f"UP_ARGS={up_args}"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: SIGINT to it is a terminal's Ctrl-C
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert make.stdout is not None
    pump = threading.Thread(target=_pump, args=(make.stdout, lines), daemon=True)
    pump.start()
    try:
        output = _wait_ready(make, lines)
        state = StackState.read(var_dir)
        assert state is not None
        assert state.ready
        yield Running(make, output, var_dir, state, lines)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(90)
            except subprocess.TimeoutExpired:
                subprocess.run(
                    [".venv/bin/python", "-m", "devstack", "--var-dir", str(var_dir), "down"],
                    cwd=REPO_ROOT,
                    check=False,
                )
                os.killpg(make.pid, signal.SIGKILL)
        pump.join(10)
        assert make.stdout is not None
        make.stdout.close()


def get(
    url: str, method: str = "GET", token: str = "", correlation: str = ""
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request to the stack: (status, lower-cased headers, JSON body)."""
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    request.add_header("x-correlation-id", correlation or str(uuid.uuid4()))
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


async def _fetch_audit(dsn: str, correlations: list[str]) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT correlation_id, gateway_type, route_id, status_code, decision, problem_type,"
            " customer_id FROM gateway_audit_logs WHERE correlation_id = ANY($1::text[])",
            correlations,
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def audit_rows(dsn: str, expected: dict[str, int]) -> list[dict[str, Any]]:
    """The audit rows of these correlation ids once each has its expected count (at most 20 s;
    then whatever is there, for the caller's assertions to name)."""
    deadline = time.monotonic() + 20
    while True:
        rows = asyncio.run(_fetch_audit(dsn, list(expected)))
        counts = {c: sum(r["correlation_id"] == c for r in rows) for c in expected}
        if all(counts[c] >= n for c, n in expected.items()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)  # the poll interval of this wait on the rows
