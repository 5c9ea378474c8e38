"""The audit trail under faults, through the real Envoys: nothing answered is lost, no duplicates.

One stack (PLANT and CP, journal, shipper, a provisioned database) for the faults that leave
it as it was: SIGKILL of the authz service, the authz service down, PostgreSQL down for 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from authz_service.audit.verify import verify
from devstack import PostgresService
from tests.e2e._audit_stack import (
    AuditDatabase,
    Sent,
    assert_one_row_per_hop,
    audit_database,
    audited_stack_options,
    journal_records,
    kill_authz,
    restart_authz,
    send_concurrently,
    send_mixed,
    wait_for_rows,
)
from tests.e2e._gateway_stack import GatewayStack, StackOptions, shipper_health
from tests.support.waiting import eventually

log = logging.getLogger(__name__)

OUTAGE_SECONDS = 30.0


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_faults")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]], audit_db: AuditDatabase
) -> StackOptions:
    return audited_stack_options(gateway_stack_types, audit_db)


class Load:
    """Bounded concurrent senders in a thread; `answered()` is what Envoy answered so far."""

    def __init__(
        self, stack: GatewayStack, token: str, *, entry: str, pause: float, seconds: float
    ):
        self.results: list[Sent] = []
        self._seen: list[Sent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stack, token, entry, pause, seconds)
        )

    def _run(
        self, stack: GatewayStack, token: str, entry: str, pause: float, seconds: float
    ) -> None:
        self.results = send_concurrently(
            stack, token, workers=4, per_worker=2000, stop=self._stop, seconds=seconds,
            pause=pause, entry=entry, on_sent=self._record,
        )  # fmt: skip

    def _record(self, sent: Sent) -> None:
        with self._lock:
            self._seen.append(sent)

    def answered(self, status: int | None = None) -> list[Sent]:
        with self._lock:
            return [s for s in self._seen if s.answered and status in (None, s.status)]

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive()


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    eventually(check, timeout, what=what, ignore=())


def _all_rows(audit_db: AuditDatabase, sent: list[Sent]) -> dict[str, list[Any]]:
    """Wait until every request has its hops' rows complete (bounded), then return them."""

    def done(request: Sent) -> Callable[[list[Any]], bool]:
        hops = 2 if request.status == 200 and request.entry == "cp" else 1
        return lambda rows: len(rows) >= hops and all(r["completed_at"] for r in rows)

    by_id = {s.correlation_id: s for s in sent}

    def arrived(rows: list[Any]) -> bool:
        return bool(rows) and done(by_id[rows[0]["correlation_id"]])(rows)

    return wait_for_rows(audit_db.reader_dsn, by_id, arrived)


def test_sigkill_of_the_authz_service_under_load_loses_no_answered_request(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    """Every request answered before, during and after the kill has one row per hop."""
    stack = gateway_stack
    token = stack.sign_token(sub="audit-sigkill", customer_id="cust-sigkill")
    with Load(stack, token, entry="cp", pause=0.01, seconds=60) as load:
        _until(lambda: len(load.answered(200)) >= 40, "the load to get going")
        kill_authz(stack)
        _until(lambda: len(load.answered(503)) >= 10, "Envoy refusing without the service")
        restart_authz(stack)
        after = len(load.answered(200))
        _until(lambda: len(load.answered(200)) >= after + 40, "answers after the restart")
    answered = [s for s in load.results if s.answered]
    statuses = {s.status for s in answered}
    assert statuses <= {200, 401, 503}, statuses
    assert {200, 401, 503} <= statuses, "the load saw before, during and after the kill"
    found = _all_rows(audit_db, answered)
    assert_one_row_per_hop(found, answered)
    log.warning(
        "SIGKILL: %d answered (%d 200, %d 401, %d 503 while down), all with one row per hop",
        len(answered), *(sum(s.status == c for s in answered) for c in (200, 401, 503)),
    )  # fmt: skip


def test_every_request_refused_while_the_authz_service_is_down_has_a_row(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    stack = gateway_stack
    kill_authz(stack)
    try:
        refused = [send_mixed(stack, i, "t", entry) for i in range(30) for entry in ("plant", "cp")]
    finally:
        restart_authz(stack)
    assert {s.status for s in refused} == {503}
    found = wait_for_rows(audit_db.reader_dsn, [s.correlation_id for s in refused],
                          lambda rows: len(rows) == 1)  # fmt: skip
    for request in refused:
        (row,) = found[request.correlation_id]
        assert row["gateway_type"] == request.entry.upper()
        assert (row["status_code"], row["response_code_details"]) == (503, "ext_authz_error")
        assert (row["path"], row["route_id"], row["method"]) == (
            "/api/v1/orders", "orders-list", "GET",
        )  # fmt: skip
        assert row["request_id"] == request.request_id
        assert row["authz_consulted"] is True
        assert row["decision"] is None


def test_postgres_down_for_30_seconds_under_load_every_row_arrives_once(
    gateway_stack: GatewayStack, audit_db: AuditDatabase, postgres: PostgresService
) -> None:
    stack = gateway_stack
    token = stack.sign_token(sub="audit-outage", customer_id="cust-outage")
    postgres.stop()
    started = time.monotonic()
    try:
        with Load(stack, token, entry="cp", pause=0.1, seconds=OUTAGE_SECONDS) as load:
            # its next batch fails and says so; bounded by the outage itself, not a margin a
            # busy 2-core box can miss (a batch in flight may take its write timeout first)
            _until(
                lambda: shipper_health(stack)[0] == 503, "the shipper to report it", OUTAGE_SECONDS
            )
            status, health = shipper_health(stack)
            assert (status, health["database"]) == (503, "down")
            _until(lambda: time.monotonic() - started >= OUTAGE_SECONDS, "the outage", 60)
        waiting = journal_records(stack)
        assert not postgres.running
    finally:
        postgres.start()
    answered = [s for s in load.results if s.answered]
    assert {s.status for s in answered} == {200, 401}, "the outage never reached a client"
    assert waiting >= len(answered), "every decision waited in the journal"
    found = _all_rows(audit_db, answered)
    assert_one_row_per_hop(found, answered)
    _until(lambda: shipper_health(stack)[0] == 200, "the shipper to report PostgreSQL back", 30)
    request_ids = [r["request_id"] for rows in found.values() for r in rows]
    assert len(request_ids) == len(set(request_ids)), "a request id twice"
    log.warning(
        "PostgreSQL down %.0fs: %d requests answered meanwhile, all %d rows in after, once each",
        OUTAGE_SECONDS, len(answered), len(request_ids),
    )  # fmt: skip


def test_the_trail_verifies_after_the_faults(
    gateway_stack: GatewayStack, audit_db: AuditDatabase
) -> None:
    """Nothing above left a gap, an edit or a stray row in any chain."""
    report = asyncio.run(verify(audit_db.reader_dsn))
    assert report.findings == []
    assert report.checked["decision"] > 0
    assert report.checked["completion"] > 0
