"""SIGTERM under load through the real Envoy: every acknowledged request keeps its audit row."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack import PostgresService
from tests.e2e._audit_stack import (
    AuditDatabase,
    Sent,
    assert_rows_match_answers,
    audit_database,
    restart_authz,
    rows_by_correlation,
    send_concurrently,
    spooled_entries,
    wait_for_rows,
)

log = logging.getLogger(__name__)

LOAD_WORKERS = 4
LOAD_PER_WORKER = 400  # bounds the load: at most 1600 requests, and 40 s
LOAD_PAUSE_S = 0.03  # paced, so the bound lasts past the flush the test waits for
ACKNOWLEDGED_FIRST = 30
# The writer fills a batch for FLUSH_S. SIGTERM comes just after a flush, and the server's
# grace is shorter than FLUSH_S, so acknowledged rows are still in the writer's hands when
# stop() runs: only its flush (or fsynced spool) can save them.
FLUSH_S = 3.0


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_sigterm")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[Any], type[Any]], audit_db: AuditDatabase
) -> Any:
    stack_options, _ = gateway_stack_types
    env = audit_db.authz_env(
        AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS=str(FLUSH_S),
        AUTHZ_AUDIT_BATCH_SIZE="5000",
        AUTHZ_SHUTDOWN_GRACE_SECONDS="0.5",
    )
    return stack_options(authz_env=env, entry_points=("plant",))


@pytest.fixture
def running_authz(gateway_stack: Any) -> Iterator[Any]:
    """A test that stopped the authz service leaves it running again for the next one."""
    yield gateway_stack
    if gateway_stack.processes["authz"].process.poll() is not None:
        restart_authz(gateway_stack)


class Load:
    """Bounded concurrent senders in a thread; `acked()` is what Envoy answered so far."""

    def __init__(self, stack: Any, token: str) -> None:
        self.results: list[Sent] = []
        self._answered: list[Sent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stack, token))

    def _run(self, stack: Any, token: str) -> None:
        self.results = send_concurrently(
            stack, token, workers=LOAD_WORKERS, per_worker=LOAD_PER_WORKER,
            stop=self._stop, seconds=40.0, pause=LOAD_PAUSE_S, on_sent=self._record,
        )  # fmt: skip

    def _record(self, sent: Sent) -> None:
        with self._lock:
            self._answered.append(sent)

    def acked(self) -> list[Sent]:
        with self._lock:
            return [s for s in self._answered if s.acknowledged]

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _sigterm_right_after_a_flush(
    stack: Any, load: Load, written: Callable[[list[Sent]], int]
) -> tuple[int, int, int]:
    """Returns (exit code, acknowledged at SIGTERM, of them not yet written at SIGTERM)."""
    _until(lambda: len(load.acked()) >= ACKNOWLEDGED_FIRST, "the load to get going")
    before = written(load.acked())
    _until(lambda: written(load.acked()) > before, "a flush", timeout=3 * FLUSH_S)
    time.sleep(0.5)  # the next batch fills with acknowledged requests
    acked = load.acked()
    process = stack.processes["authz"].process
    process.send_signal(signal.SIGTERM)
    held = len(acked) - written(acked)
    exit_code = process.wait(timeout=30)
    time.sleep(0.3)  # some load against the stopped service: Envoy answers 503
    return exit_code, len(acked), held


@pytest.mark.parametrize("database", ["up", "down"])
def test_sigterm_under_load_loses_no_acknowledged_request(
    running_authz: Any, audit_db: AuditDatabase, postgres: PostgresService, database: str
) -> None:
    """`up`: stop() flushes what it holds to PostgreSQL. `down`: it spools it (fsynced), and
    the service restarted on the same spool dir replays it once PostgreSQL is back."""
    stack = running_authz
    token = stack.sign_token(sub=f"audit-sigterm-{database}", customer_id="cust-sigterm")

    def written(acked: list[Sent]) -> int:
        if database == "down":
            return spooled_entries(stack, "decision")
        return len(rows_by_correlation(audit_db.admin_dsn, [s.correlation_id for s in acked]))

    if database == "down":
        postgres.stop()
    try:
        with Load(stack, token) as load:
            exit_code, acked_at_sigterm, held = _sigterm_right_after_a_flush(stack, load, written)
        assert exit_code == 0
        assert held > 0, "nothing was held at SIGTERM: the test proves nothing about stop()"
        if database == "down":  # every acknowledged decision waits in the spool, fsynced
            assert spooled_entries(stack, "decision") >= len(load.acked())
        restart_authz(stack)  # same env: the same database and spool dir
        assert stack.request("plant", "GET", "/api/v1/orders", token=token).status == 200
    finally:
        postgres.start()
    acked = [s for s in load.results if s.acknowledged]
    refused = [s for s in load.results if s.status == 503]
    assert not [s for s in load.results if not s.acknowledged and s.status != 503]
    assert refused, "the load did not reach the stopped service: no proof of a cut"
    assert all(s.status == (200 if s.allowed else 401) for s in acked)
    ids = [s.correlation_id for s in acked]
    found = wait_for_rows(audit_db.admin_dsn, ids, lambda rows: len(rows) == 1)
    assert_rows_match_answers(found, acked)
    completed = sum(1 for i in ids if found[i][0]["completed_at"] is not None)
    log.warning(
        "SIGTERM (PostgreSQL %s): %d sent, %d acknowledged (%d at SIGTERM, %d of them still "
        "held by the writer), all recorded (%d completed by Envoy's log), %d answered 503",
        database, len(load.results), len(acked), acked_at_sigterm, held, completed, len(refused),
    )  # fmt: skip
