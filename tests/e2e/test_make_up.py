"""`make up` as a user runs it: entry points answer, audit rows land, Ctrl-C leaves nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devstack import devkey
from devstack.free_ports import free_ports
from devstack.stackconfig import choose_ports
from devstack.stackstate import StackState, Tracked
from gateway_config import load_gateway_config
from tests.e2e._make_up import Running, audit_rows, get, group_members, make_up
from tests.support.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "config" / "gateway.yaml"
START_TIMEOUT = 180.0
PROBLEM_BASE = "https://gateway.example/problems/"


def _port_names() -> list[str]:
    return sorted(choose_ports(load_gateway_config(CONFIG), {}, free=False).by_name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The first stack: every port given (`--port NAME=PORT`, free ones) as its defaults."""
    names = _port_names()
    ports = " ".join(f"--port {n}={p}" for n, p in zip(names, free_ports(len(names)), strict=True))
    with make_up(tmp_path_factory.mktemp("make-up"), ports) as running:
        yield running


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
        status, headers, body = get(f"{url}/api/v1/me", correlation=correlation)
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
        status, _, body = get(f"{url}/api/v1/me", token=token, correlation=correlation)
        assert status == 200, body
        seen = {k.lower(): v for k, v in body["headers"].items()}
        assert seen["x-user-id"] == f"user-{entry}"
        assert seen["x-customer-id"] == customer
        assert seen["x-correlation-id"] == correlation
        expected[correlation] = 1 if entry == "plant" else 2  # CP/PP hop, then PLANT
    rows = audit_rows(stack.state.database_url, expected)
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
    status, headers, body = get(f"{stack.state.urls['cp']}/api/v1/orders", "POST", token)
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
    with make_up(tmp_path, "--free-ports") as second:
        mine = set(second.state.ports.values())
        assert set(second.state.ports) == set(_port_names())
        assert not mine & first
        assert not mine & _well_known_ports()
        gateway = {c.pid for c in second.state.children if c.name not in DATASTORES}
        datastores = {c.pid for c in second.state.children if c.name in DATASTORES}
        listening = _listening_ports(group_members(gateway))
        # every port the gateway's processes listen on is one it chose and reported
        assert listening <= mine, listening - mine
        assert mine <= listening, mine - listening
        assert not _listening_ports(group_members(datastores)) & (first | _well_known_ports())
        for url in (*stack.state.urls.values(), *second.state.urls.values()):
            assert get(f"{url}/api/v1/status")[0] == 200


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

    def with_the_shipper() -> list[tuple[str, str]] | None:
        found = asyncio.run(_sessions(observer))
        return found if any(app == "gateway-audit-shipper" for _, app in found) else None

    sessions = eventually(with_the_shipper, 30, what="the shipper's session")
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

    def restarted() -> bool:
        state = stack.refresh()
        again = [c for c in state.children if c.name == "shipper" and c.pid != shipper.pid]
        return bool(again) and again[0].alive()

    eventually(restarted, 60, what="the shipper restarted")
    # and rows keep coming through it
    issuer = devkey.load(stack.var_dir)
    token = issuer.sign(roles=["customer"], customer="cust-restart", user="user-restart")
    correlation = str(uuid.uuid4())
    status, _, _ = get(f"{stack.state.urls['plant']}/api/v1/me", token=token,
                        correlation=correlation)  # fmt: skip
    assert status == 200
    rows = audit_rows(stack.state.database_url, {correlation: 1})
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
    assert group_members({c.pid for c in children}) == set()
    assert StackState.read(stack.var_dir) is None
