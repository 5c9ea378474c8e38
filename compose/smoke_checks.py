"""The compose smoke's checks: 401, 200, 403, 402 through PLANT, CP and PP, and the audit trail.

Run by compose/ci-smoke.sh once the stack is healthy (repository root on PYTHONPATH):

    python compose/smoke_checks.py --plant URL --cp URL --pp URL --database-url DSN

GATEWAY_DEV_JWT_SECRET is the stack's DEV_JWT_SECRET (tokens are signed with it here);
SMOKE_TOKEN is a customer token minted inside the authz container by `python -m devstack
token` (roles customer,support, customer cust-ci, user ci-user), so that path is checked too.
Each request carries its own correlation id; its audit rows (one per hop: CP and PP forward to
PLANT) must all be in PostgreSQL, completed by Envoy's access log, with the expected decision,
stage, code and final status, read as the reader login. Every Envoy's access log must have
been rotated (the stack's rotation size is 4 KiB), which needs the shipper's reopen request to
reach each Envoy's admin socket. Exit status 1 and one line per failure otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from devstack.demo import Reply, send
from devstack.devkey import DEV_AUDIENCE, DEV_ISSUER, DevIssuer

ENTRIES = ("plant", "cp", "pp")
ME, ORDERS, REPORTS = "/api/v1/me", "/api/v1/orders", "/api/v1/reports"
SMOKE_USER, SMOKE_CUSTOMER = "ci-user", "cust-ci"
TRIAL_DAY_LIMIT = 100  # config/gateway.yaml: budgets.plans.trial.api_calls.day
MAX_SPEND_REQUESTS = 150  # bounded even if the budget were never enforced
AUDIT_WAIT_SECONDS = 60.0
ROTATION_REQUESTS = 20  # of about 500 B of access log each: past a 4 KiB rotation size
GENERATIONS_QUERY = """
SELECT source_id, segment FROM gateway_audit_ship_state WHERE source_kind = 'access_log'
"""
AUDIT_QUERY = """
SELECT correlation_id, gateway_type, decision, denied_stage, problem_type, status_code,
       completed_at IS NOT NULL
FROM gateway_audit_logs WHERE correlation_id = ANY(%s)
"""

# (gateway type, decision, denied stage, problem code, final status) of one hop's audit row
Hop = tuple[str, str, str | None, str | None, int]


@dataclass
class Smoke:
    urls: dict[str, str]
    issuer: DevIssuer
    expected: dict[str, Sequence[Hop]] = field(default_factory=dict)  # correlation id -> rows
    titles: dict[str, str] = field(default_factory=dict)  # correlation id -> case
    failures: list[str] = field(default_factory=list)

    def request(
        self,
        entry: str,
        path: str,
        *,
        status: int,
        code: str | None = None,
        method: str = "GET",
        token: str | None = None,
        hops: Sequence[Hop],
    ) -> tuple[Reply, str]:
        """Send one request, check its status (and problem code), record its audit rows.

        Returns the reply and the request's correlation id.
        """
        correlation = str(uuid.uuid4())
        title = f"{entry.upper()} {method} {path} -> {status}{f' {code}' if code else ''}"
        reply = send(f"{self.urls[entry]}{path}", method, token, correlation)
        self.expected[correlation] = hops
        self.titles[correlation] = title
        problem = reply.body.get("type", "") if isinstance(reply.body, dict) else ""
        if reply.status != status:
            self.failures.append(f"{title}: got {reply.status}: {str(reply.body)[:300]}")
        elif code is not None and not (
            reply.headers.get("content-type", "").startswith("application/problem+json")
            and problem.endswith(f"/{code}")
        ):
            self.failures.append(f"{title}: not a problem+json of type .../{code}: {reply}")
        else:
            print(f"smoke: {title}: ok")
        return reply, correlation

    def token(self, roles: str, customer: str, user: str, *, trial: bool = False) -> str:
        plan = "trial" if trial else "standard"
        return self.issuer.sign(
            roles=roles.split(","), customer=customer, user=user, plan=plan, trial=trial
        )


def hops_for(entry: str, entry_hop: Hop, plant_hop: Hop | None) -> list[Hop]:
    """The entry's own row, and PLANT's when CP or PP forwarded the request."""
    if entry == "plant":
        return [entry_hop]
    return [entry_hop] if plant_hop is None else [entry_hop, plant_hop]


def check_identity(smoke: Smoke, entry: str, reply: Reply, correlation_header: str) -> None:
    """The backend saw the identity headers the gateway added (it echoes what it received)."""
    seen = reply.body.get("headers", {}) if isinstance(reply.body, dict) else {}
    seen = {name.lower(): value for name, value in seen.items()}
    wanted = {"x-user-id": SMOKE_USER, "x-customer-id": SMOKE_CUSTOMER}
    for name, value in wanted.items():
        if seen.get(name) != value:
            smoke.failures.append(f"{entry.upper()} 200: the backend saw {name}={seen.get(name)}")
    if "customer" not in seen.get("x-roles", "").split(","):
        smoke.failures.append(f"{entry.upper()} 200: the backend saw x-roles={seen.get('x-roles')}")
    if seen.get("x-correlation-id") != correlation_header:
        smoke.failures.append(f"{entry.upper()} 200: x-correlation-id not passed through")
    if entry != "plant" and not seen.get("x-causation-id"):
        smoke.failures.append(f"{entry.upper()} 200: no x-causation-id from the {entry} hop")


def run_statuses(smoke: Smoke, customer_token: str) -> None:
    """401, 200, 403 (RBAC) and 403 (OPA policy) through each entry point."""
    viewer = smoke.token("viewer", SMOKE_CUSTOMER, "ci-viewer")
    trial_admin = smoke.token("customer_admin,support", SMOKE_CUSTOMER, "ci-trial", trial=True)
    for entry in ENTRIES:
        kind = entry.upper()
        unauthenticated = [(kind, "deny", "authenticate", "token_missing", 401)]
        smoke.request(entry, ME, status=401, code="token_missing", hops=unauthenticated)
        allowed = hops_for(
            entry, (kind, "allow", None, None, 200), ("PLANT", "allow", None, None, 200)
        )
        reply, correlation = smoke.request(
            entry, ME, status=200, token=customer_token, hops=allowed
        )
        if reply.status == 200:
            check_identity(smoke, entry, reply, correlation)
        forbidden = [(kind, "deny", "authorize", "permission_denied", 403)]
        smoke.request(
            entry,
            ORDERS,
            method="POST",
            status=403,
            code="permission_denied",
            token=viewer,
            hops=forbidden,
        )
        paid_only = [(kind, "deny", "policy", "paid_only", 403)]
        smoke.request(
            entry, REPORTS, status=403, code="paid_only", token=trial_admin, hops=paid_only
        )


def run_forged_causation(smoke: Smoke, customer_token: str) -> None:
    """Only hops reach PLANT's internal listener: a client's x-causation-id never gets through."""
    forged = str(uuid.uuid4())
    reply = send(f"{smoke.urls['plant']}{ME}", "GET", customer_token, str(uuid.uuid4()),
                 headers={"x-causation-id": forged})  # fmt: skip
    if reply.status != 200:
        smoke.failures.append(f"forged causation: PLANT answered {reply.status}")
    elif forged in str(reply.body):
        smoke.failures.append("PLANT passed a client's x-causation-id to the backend")
    else:
        print("smoke: a client's x-causation-id is stripped by PLANT's public listener: ok")


def run_budget(smoke: Smoke) -> None:
    """A trial customer spends its daily budget through PLANT; then 402 through every entry."""
    customer = f"trial-ci-{uuid.uuid4().hex[:8]}"
    trial = smoke.token("customer,support", customer, "ci-spender", trial=True)
    allowed = 0
    for _ in range(MAX_SPEND_REQUESTS):
        if send(f"{smoke.urls['plant']}{ORDERS}", token=trial).status != 200:
            break
        allowed += 1
    if not 0 < allowed <= TRIAL_DAY_LIMIT:
        smoke.failures.append(f"budget: {allowed} requests allowed, limit {TRIAL_DAY_LIMIT}")
    print(f"smoke: budget: {allowed} x 200 before the limit (day limit {TRIAL_DAY_LIMIT})")
    refused = ("PLANT", "deny", "budget", "budget_exceeded", 402)
    for entry in ENTRIES:
        entry_hop = refused if entry == "plant" else (entry.upper(), "allow", None, None, 402)
        hops = hops_for(entry, entry_hop, refused)
        smoke.request(entry, ORDERS, status=402, code="budget_exceeded", token=trial, hops=hops)


def audit_rows(database_url: str, correlations: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute(AUDIT_QUERY, (correlations,)).fetchall()


def check_audit(smoke: Smoke, database_url: str) -> None:
    """Wait until every request's rows are written and completed, then compare them."""
    deadline = time.monotonic() + AUDIT_WAIT_SECONDS
    while True:
        rows = audit_rows(database_url, list(smoke.expected))
        found: dict[str, list[Hop]] = {c: [] for c in smoke.expected}
        completed = all(row[6] for row in rows)
        for correlation, *hop, _done in rows:
            found[correlation].append(tuple(hop))
        counts_match = all(len(found[c]) == len(h) for c, h in smoke.expected.items())
        if (counts_match and completed) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not completed:
        smoke.failures.append("audit: some rows were never completed by Envoy's access log")
    for correlation, hops in smoke.expected.items():
        got = sorted(found[correlation], key=str)
        if got != sorted(hops, key=str):
            smoke.failures.append(f"audit of {smoke.titles[correlation]}: {got}, wanted {hops}")
    print(f"smoke: audit: {len(rows)} rows for {len(smoke.expected)} requests checked")


def run_rotation(smoke: Smoke) -> None:
    """Enough traffic through each entry point for its access log to pass the rotation size."""
    for entry in ENTRIES:
        statuses = {send(f"{smoke.urls[entry]}/api/v1/status").status
                    for _ in range(ROTATION_REQUESTS)}  # fmt: skip
        if statuses != {200}:
            smoke.failures.append(f"{entry.upper()} /api/v1/status answered {statuses}")


def check_rotation(smoke: Smoke, database_url: str) -> None:
    """Each access log's committed generation moved past 1: rotated, reopened by Envoy.

    Envoy reopens a log at its next write after /reopen_logs, not at the request itself, and
    the shipper moves to the next generation only once the new file exists. So a log rotated
    after its last request stays at generation 1 until traffic resumes: every pass sends one
    request to each entry that has not moved yet (at most one per entry per pass, bounded).
    """
    deadline = time.monotonic() + AUDIT_WAIT_SECONDS
    while True:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            generations: dict[str, int] = dict(conn.execute(GENERATIONS_QUERY).fetchall())
        rotated = {entry for entry in ENTRIES for source, generation in generations.items()
                   if source.endswith(f"/{entry}.log") and generation >= 2}  # fmt: skip
        if rotated == set(ENTRIES) or time.monotonic() > deadline:
            break
        for entry in set(ENTRIES) - rotated:
            send(f"{smoke.urls[entry]}/api/v1/status")
        time.sleep(0.5)
    if rotated != set(ENTRIES):
        smoke.failures.append(f"access logs not rotated: {sorted(set(ENTRIES) - rotated)} "
                              f"(ship state {generations})")  # fmt: skip
    else:
        print(f"smoke: every access log rotated and reopened by its Envoy: {generations}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for entry in ENTRIES:
        parser.add_argument(f"--{entry}", required=True, help=f"base URL of the {entry} entry")
    parser.add_argument("--database-url", required=True, help="DSN that may read audit rows")
    args = parser.parse_args(argv)
    secret, customer_token = os.environ.get("GATEWAY_DEV_JWT_SECRET"), os.environ.get("SMOKE_TOKEN")
    if not secret or not customer_token:
        parser.error("set GATEWAY_DEV_JWT_SECRET and SMOKE_TOKEN (see the module docstring)")
    urls = {entry: getattr(args, entry).rstrip("/") for entry in ENTRIES}
    smoke = Smoke(urls, DevIssuer(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, secret=secret))
    run_statuses(smoke, customer_token)
    run_forged_causation(smoke, customer_token)
    run_budget(smoke)
    run_rotation(smoke)
    check_audit(smoke, args.database_url)
    check_rotation(smoke, args.database_url)
    for failure in smoke.failures:
        print(f"smoke: FAILED: {failure}", file=sys.stderr)
    return 1 if smoke.failures else 0


if __name__ == "__main__":
    sys.exit(main())
