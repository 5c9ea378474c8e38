"""`make up` as a user runs it: entry points answer, audit rows land, Ctrl-C leaves nothing."""

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
from typing import Any

import asyncpg
import pytest

from devstack import devkey
from devstack.free_ports import free_port
from devstack.stackconfig import choose_ports
from devstack.stackstate import StackState, Tracked
from devstack.up import READY_LINE
from gateway_config import load_gateway_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "config" / "gateway.yaml"
START_TIMEOUT = 180.0
PROBLEM_BASE = "https://gateway.example/problems/"


@dataclass
class Running:
    make: subprocess.Popen[str]
    output: list[str]
    var_dir: Path
    state: StackState


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
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


def _group_members(leaders: set[int]) -> set[int]:
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


def _port_names() -> list[str]:
    return sorted(choose_ports(load_gateway_config(CONFIG), {}, free=False).by_name)


@contextlib.contextmanager
def _make_up(work: Path, up_args: str) -> Iterator[Running]:
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
    pump = threading.Thread(target=_pump, args=(make.stdout, lines), daemon=True)
    pump.start()
    try:
        output = _wait_ready(make, lines)
        state = StackState.read(var_dir)
        assert state is not None
        assert state.ready
        yield Running(make, output, var_dir, state)
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The first stack: every port given (`--port NAME=PORT`, free ones) as its defaults."""
    ports = " ".join(f"--port {name}={free_port()}" for name in _port_names())
    with _make_up(tmp_path_factory.mktemp("make-up"), ports) as running:
        yield running


def _get(
    url: str, method: str = "GET", token: str = "", correlation: str = ""
) -> tuple[int, dict[str, str], dict[str, Any]]:
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


def _audit(dsn: str, expected: dict[str, int]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        rows = asyncio.run(_fetch_audit(dsn, list(expected)))
        counts = {c: sum(r["correlation_id"] == c for r in rows) for c in expected}
        if all(counts[c] >= n for c, n in expected.items()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


ROLE_AT = {"plant": "customer", "cp": "customer", "pp": "support"}
GATEWAY_TYPE = {"plant": "PLANT", "cp": "CP", "pp": "PP"}


def test_make_up_prints_the_table_and_the_token_hint(stack: Running) -> None:
    text = "\n".join(stack.output)
    for name in ("PLANT entry point", "CP entry point", "PP entry point", "authz", "backend"):
        assert name in text
    for url in stack.state.urls.values():
        assert url in text
    assert "make token ROLE=" in text
    assert (stack.var_dir / devkey.KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_every_entry_point_refuses_without_a_token_and_serves_with_one(stack: Running) -> None:
    issuer = devkey.load(stack.var_dir)
    expected: dict[str, int] = {}
    denied: dict[str, str] = {}
    allowed: dict[str, str] = {}
    for entry, url in stack.state.urls.items():
        denied[entry] = correlation = str(uuid.uuid4())
        status, headers, body = _get(f"{url}/api/v1/me", correlation=correlation)
        assert status == 401
        assert headers["content-type"] == "application/problem+json"
        assert headers["www-authenticate"].startswith("Bearer")
        assert body["type"] == PROBLEM_BASE + "token_missing"
        assert body["status"] == 401
        assert body["correlation_id"] == correlation
        expected[correlation] = 1

        customer = f"cust-{entry}-{uuid.uuid4().hex[:6]}"
        token = issuer.sign(roles=[ROLE_AT[entry]], customer=customer, user=f"user-{entry}")
        allowed[entry] = correlation = str(uuid.uuid4())
        status, _, body = _get(f"{url}/api/v1/me", token=token, correlation=correlation)
        assert status == 200, body
        seen = {k.lower(): v for k, v in body["headers"].items()}
        assert seen["x-user-id"] == f"user-{entry}"
        assert seen["x-customer-id"] == customer
        assert seen["x-correlation-id"] == correlation
        expected[correlation] = 1 if entry == "plant" else 2  # CP/PP hop, then PLANT
    rows = _audit(stack.state.database_url, expected)
    for entry in stack.state.urls:
        [refusal] = [r for r in rows if r["correlation_id"] == denied[entry]]
        assert refusal["gateway_type"] == GATEWAY_TYPE[entry]
        assert (refusal["decision"], refusal["problem_type"]) == ("deny", "token_missing")
        assert refusal["status_code"] == 401
        hops = {r["gateway_type"]: r for r in rows if r["correlation_id"] == allowed[entry]}
        assert set(hops) == {GATEWAY_TYPE[entry], "PLANT"}
        assert all(r["decision"] == "allow" for r in hops.values())


def test_a_missing_permission_is_a_403_problem(stack: Running) -> None:
    token = devkey.load(stack.var_dir).sign(roles=["viewer"], customer="cust-viewer")
    status, headers, body = _get(f"{stack.state.urls['cp']}/api/v1/orders", "POST", token)
    assert status == 403
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == PROBLEM_BASE + "permission_denied"


def test_make_demo_walks_through_401_200_403_402_and_the_audit_rows(stack: Running) -> None:
    demo = subprocess.run(
        ["make", "--no-print-directory", "demo", f"VAR_DIR={stack.var_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for marker in ("-> 401 ok", "-> 200 ok", "-> 403 ok", "-> 402 ok", "budget_exceeded"):
        assert marker in demo.stdout


def _listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports these processes listen on (/proc: this network namespace)."""
    by_inode: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                by_inode[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    ports: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in by_inode:
                        ports.add(by_inode[target[8:-1]])
    return ports


def _well_known_ports() -> set[int]:
    return set(choose_ports(load_gateway_config(CONFIG), {}, free=False).by_name.values())


DATASTORES = ("postgres", "redis", "opa")


def test_a_second_stack_with_free_ports_binds_none_of_the_firsts_or_a_default(
    stack: Running, tmp_path: Path
) -> None:
    """Issue 13, finding 9: --free-ports still bound the admin port 127.0.0.1:9002."""
    first = set(stack.state.ports.values())
    assert set(stack.state.ports) == set(_port_names())
    with _make_up(tmp_path, "--free-ports") as second:
        mine = set(second.state.ports.values())
        assert set(second.state.ports) == set(_port_names())
        assert not mine & first
        assert not mine & _well_known_ports()
        gateway = {c.pid for c in second.state.children if c.name not in DATASTORES}
        datastores = {c.pid for c in second.state.children if c.name in DATASTORES}
        listening = _listening_ports(_group_members(gateway))
        # every port the gateway's processes listen on is one it chose and reported
        assert listening <= mine, listening - mine
        assert mine <= listening, mine - listening
        assert not _listening_ports(_group_members(datastores)) & (first | _well_known_ports())
        for url in (*stack.state.urls.values(), *second.state.urls.values()):
            assert _get(f"{url}/api/v1/status")[0] == 200


async def _sessions(dsn: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(dsn, server_settings={"application_name": "observer"})
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT usename, application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend'"
        )
    finally:
        await connection.close()
    return sorted((row["usename"], row["application_name"]) for row in rows)


def _superuser_dsn(stack: Running) -> str:
    """The observer's own view: the superuser of the PostgreSQL `make up` started."""
    (server,) = [c for c in stack.state.children if c.name == "postgres"]
    argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
    data = Path(argv[argv.index("-D") + 1])
    port = next(a.split("=", 1)[1] for a in argv if a.startswith("port="))
    password = (data.parent / "password").read_text().strip()
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/gateway"


def test_nothing_connects_as_the_superuser(stack: Running) -> None:
    """Provisioning was the superuser's only step: every session runs as its own login."""
    observer = _superuser_dsn(stack)
    deadline = time.monotonic() + 30
    sessions = asyncio.run(_sessions(observer))
    while not any(app == "gateway-audit-shipper" for _, app in sessions):
        assert time.monotonic() < deadline, sessions
        time.sleep(0.5)
        sessions = asyncio.run(_sessions(observer))
    sessions = [(user, app) for user, app in sessions if app != "observer"]
    assert "postgres" not in {user for user, _ in sessions}, sessions
    shipper_logins = {user for user, app in sessions if app == "gateway-audit-shipper"}
    assert shipper_logins == {"gateway_shipper"}
    authz = next(c for c in stack.state.children if c.name == "authz")
    environ = Path(f"/proc/{authz.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith(b"AUTHZ_DATABASE_URL=")], "no database role"


def test_the_shipper_is_restarted_when_it_dies(stack: Running) -> None:
    (shipper,) = [c for c in stack.state.children if c.name == "shipper"]
    os.kill(shipper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        state = StackState.read(stack.var_dir)
        assert state is not None
        again = [c for c in state.children if c.name == "shipper" and c.pid != shipper.pid]
        if again and again[0].alive():
            break
        assert time.monotonic() < deadline, "the shipper was not restarted"
        time.sleep(0.2)
    stack.state = state
    # and rows keep coming through it
    issuer = devkey.load(stack.var_dir)
    token = issuer.sign(roles=["customer"], customer="cust-restart", user="user-restart")
    correlation = str(uuid.uuid4())
    status, _, _ = _get(f"{stack.state.urls['plant']}/api/v1/me", token=token,
                        correlation=correlation)  # fmt: skip
    assert status == 200
    rows = _audit(stack.state.database_url, {correlation: 1})
    assert [r["decision"] for r in rows] == ["allow"]


def test_sigint_stops_every_process_it_started(stack: Running) -> None:
    children = list(stack.state.children)
    assert {c.name for c in children} >= {
        "backend", "authz", "shipper", "envoy plant", "envoy cp", "envoy pp",
    }  # fmt: skip
    assert all(c.alive() for c in children)
    os.killpg(stack.make.pid, signal.SIGINT)
    stack.make.wait(90)
    supervisor: Tracked = stack.state.supervisor
    assert not supervisor.alive()
    assert [c.name for c in children if c.alive()] == []
    assert _group_members({c.pid for c in children}) == set()
    assert StackState.read(stack.var_dir) is None
