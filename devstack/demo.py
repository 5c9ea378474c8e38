"""`make demo`: a scripted walk through the running gateway, printed step by step.

401 without a token, 200 with one (and the identity headers the backend saw), 403 for a
missing permission, 402 once a trial customer's budget is spent, then the audit rows.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from authz_service.audit.framing import decode_record, read_frames
from devstack import devkey
from devstack.stackstate import StackState
from gateway_contract.headers import IDENTITY_HEADERS

IDENTITY = (*IDENTITY_HEADERS, "x-causation-id")
MAX_BUDGET_REQUESTS = 500  # the trial plan allows 100 a day; the loop stays bounded anyway
AUDIT_COLUMNS = ("gateway_type", "route_id", "method", "path", "status_code", "decision",
                 "denied_stage", "problem_type", "customer_id")  # fmt: skip


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def send(
    url: str,
    method: str = "GET",
    token: str | None = None,
    correlation: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request through the gateway (always 127.0.0.1); JSON bodies parsed."""
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310 - http only
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if correlation:
        request.add_header("x-correlation-id", correlation)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return Reply(status, {k.lower(): v for k, v in headers.items()}, body)


@dataclass
class Walk:
    """The demo's state: URLs, the dev issuer, the correlation id of each step, failures."""

    state: StackState
    issuer: devkey.DevIssuer
    steps: dict[str, str] = field(default_factory=dict)  # title -> correlation id
    expected_rows: dict[str, int] = field(default_factory=dict)  # correlation id -> rows
    failures: list[str] = field(default_factory=list)

    def track(self, title: str, rows: int) -> str:
        """A new correlation id for a step whose requests leave `rows` audit rows."""
        correlation = str(uuid.uuid4())
        self.steps[title] = correlation
        self.expected_rows[correlation] = rows
        return correlation

    def step(self, number: int, title: str, url: str, expected: int, reply: Reply) -> None:
        ok = reply.status == expected
        mark = "ok" if ok else f"UNEXPECTED (wanted {expected})"
        print(f"\n{number}. {title}\n   {url}\n   -> {reply.status} {mark}")
        if not ok:
            self.failures.append(f"{title}: {reply.status}, wanted {expected}")

    def show_problem(self, reply: Reply) -> None:
        kind = reply.headers.get("content-type", "")
        print(f"   content-type: {kind}")
        if "www-authenticate" in reply.headers:
            print(f"   www-authenticate: {reply.headers['www-authenticate']}")
        print(_indent(json.dumps(reply.body, indent=2)))


def _indent(text: str, prefix: str = "     ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _walk_statuses(walk: Walk) -> None:
    cp, plant = walk.state.urls["cp"], walk.state.urls["plant"]
    run = uuid.uuid4().hex[:8]
    me = f"{cp}/api/v1/me"
    correlation = walk.track("no token", rows=1)
    reply = send(me, correlation=correlation)
    walk.step(1, "No token: the gateway answers 401 with an RFC 7807 problem", me, 401, reply)
    walk.show_problem(reply)

    token = walk.issuer.sign(roles=["customer"], customer=f"cust-{run}", user=f"alice-{run}")
    correlation = walk.track("with a token", rows=2)  # the CP hop and the PLANT hop
    reply = send(me, token=token, correlation=correlation)
    walk.step(
        2, "With a customer token: 200, identity headers added by the gateway", me, 200, reply
    )
    seen = reply.body.get("headers", {}) if isinstance(reply.body, dict) else {}
    seen = {k.lower(): v for k, v in seen.items()}
    print("   the backend saw:")
    for name in IDENTITY:
        print(f"     {name}: {seen.get(name, '(absent)')}")

    viewer = walk.issuer.sign(roles=["viewer"], customer=f"cust-{run}", user=f"victor-{run}")
    orders = f"{cp}/api/v1/orders"
    correlation = walk.track("missing permission", rows=1)
    reply = send(orders, "POST", token=viewer, correlation=correlation)
    walk.step(3, "A viewer POSTs an order: 403, orders:write is missing", orders, 403, reply)
    walk.show_problem(reply)

    _walk_budget(walk, f"{plant}/api/v1/orders", run)


def _walk_budget(walk: Walk, url: str, run: str) -> None:
    trial = walk.issuer.sign(roles=["customer"], customer=f"trial-{run}", user=f"tina-{run}",
                             plan="trial", trial=True)  # fmt: skip
    correlation = walk.track("budget spent", rows=0)
    allowed, reply = 0, Reply(0, {}, None)
    for _ in range(MAX_BUDGET_REQUESTS):
        reply = send(url, token=trial, correlation=correlation)
        if reply.status != 200:
            break
        allowed += 1
    walk.expected_rows[correlation] = allowed + 1
    title = f"A trial customer calls until the daily budget is spent ({allowed} x 200)"
    walk.step(4, title, url, 402, reply)
    walk.show_problem(reply)


async def _audit_rows(dsn: str, correlations: list[str]) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await connection.fetch(
            f"SELECT correlation_id, created_at, {', '.join(AUDIT_COLUMNS)} "  # noqa: S608
            "FROM gateway_audit_logs WHERE correlation_id = ANY($1::text[])",
            correlations,
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def _journal_rows(journals: Path, correlations: list[str]) -> list[dict[str, Any]]:
    """Decisions from the authz journals (no PostgreSQL, so no shipper): the service's status."""
    decisions = []
    for segment in sorted(journals.glob("*/*.journal")):
        for _, payload in read_frames(segment.read_bytes(), 0).payloads:
            row = decode_record(payload)
            if row.get("correlation_id") in correlations:
                row["status_code"] = row.get("authz_status_code")
                row["created_at"] = row.get("decided_at")
                decisions.append(row)
    return decisions


def audit_rows(
    state: StackState, expected: dict[str, int], wait: float = 15.0
) -> list[dict[str, Any]]:
    """The audit rows of these correlation ids, waiting for the expected counts (async writes)."""
    correlations = list(expected)
    deadline = time.monotonic() + wait
    while True:
        if state.database_url:
            rows = asyncio.run(_audit_rows(state.database_url, correlations))
        else:
            rows = _journal_rows(Path(state.audit_journal_dir), correlations)
        found = Counter(str(row.get("correlation_id")) for row in rows)
        if all(found[c] >= n for c, n in expected.items()) or time.monotonic() > deadline:
            return sorted(rows, key=lambda row: str(row.get("created_at")))
        time.sleep(0.5)


def _show_audit(walk: Walk) -> None:
    where = "PostgreSQL gateway_audit_logs" if walk.state.database_url else "the audit journal"
    rows = audit_rows(walk.state, walk.expected_rows)
    print(f"\n5. The audit rows of those requests ({where}; CP requests have one row per hop)")
    print("   " + " | ".join(AUDIT_COLUMNS))
    for title, correlation in walk.steps.items():
        mine = [row for row in rows if row.get("correlation_id") == correlation]
        if not mine:
            walk.failures.append(f"no audit row for step {title!r}")
        print(f"   -- {title}: {len(mine)} row(s)" + (", last 2 shown" if len(mine) > 2 else ""))
        for row in mine[-2:]:
            cells = (row.get(column) for column in AUDIT_COLUMNS)
            print("   " + " | ".join("-" if cell is None else str(cell) for cell in cells))


def run_demo(var_dir: Path) -> int:
    state = StackState.read(var_dir)
    if state is None or not state.ready or not state.supervisor.alive():
        print("devstack demo: the gateway is not running; start it with `make up`")
        return 1
    walk = Walk(state=state, issuer=devkey.load(var_dir))
    print("A walk through the gateway: every request goes CP/PLANT -> ext_authz -> backend.")
    _walk_statuses(walk)
    _show_audit(walk)
    if walk.failures:
        print("\ndemo: unexpected results:\n  " + "\n  ".join(walk.failures))
        return 1
    print("\ndemo: every step behaved as described.")
    return 0
