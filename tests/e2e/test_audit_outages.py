"""Nothing lost through the real Envoy: requests during a PostgreSQL outage are replayed."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from devstack import PostgresService
from tests.e2e._audit_stack import (
    AuditDatabase,
    assert_rows_match_answers,
    audit_database,
    one_completed_row,
    send_concurrently,
    spooled_entries,
    wait_for_rows,
)

log = logging.getLogger(__name__)

OUTAGE_REQUESTS = 200  # N of the issue: sent while PostgreSQL is stopped


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_outage")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[Any], type[Any]], audit_db: AuditDatabase
) -> Any:
    stack_options, _ = gateway_stack_types
    return stack_options(authz_env=audit_db.authz_env(), entry_points=("plant",))


def test_requests_during_a_postgres_outage_are_all_recorded_after_it(
    gateway_stack: Any, audit_db: AuditDatabase, postgres: PostgresService
) -> None:
    stack = gateway_stack
    token = stack.sign_token(sub="audit-outage", customer_id="cust-outage")
    started = time.monotonic()
    postgres.stop()
    try:
        # spread over ~2.5 s, so the writer meets the outage on several retry rounds
        sent = send_concurrently(
            stack, token, workers=4, per_worker=OUTAGE_REQUESTS // 4, pause=0.05
        )
        sending = time.monotonic() - started
        assert len(sent) == OUTAGE_REQUESTS
        # the audit never delays or fails a request: every answer is the authz decision
        assert [s.status for s in sent] == [200 if s.allowed else 401 for s in sent]
        # decisions and Envoy's completions all wait in the spool (bounded poll)
        deadline = time.monotonic() + 30
        while spooled_entries(stack) < 2 * OUTAGE_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spooled_entries(stack) >= 2 * OUTAGE_REQUESTS
        assert not postgres.running
    finally:
        postgres.start()
    outage = time.monotonic() - started
    ids = [s.correlation_id for s in sent]
    found = wait_for_rows(audit_db.admin_dsn, ids, one_completed_row)
    replayed = time.monotonic() - started - outage
    log.warning(
        "outage: N=%d sent in %.1fs; PostgreSQL down %.1fs; all rows in %.1fs after",
        len(sent), sending, outage, replayed,
    )  # fmt: skip
    assert sum(len(rows) for rows in found.values()) == OUTAGE_REQUESTS
    assert all(one_completed_row(found.get(i, [])) for i in ids)
    assert_rows_match_answers(found, sent)
    assert not list(stack.spool_dir.glob("audit-*.jsonl")), "the spool is empty after replay"
    assert not (stack.spool_dir / "rejected.jsonl").exists()
