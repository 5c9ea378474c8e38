"""One check, whatever the transport: deadline, pipeline, journal before the answer, metrics.

The gRPC servicer and the HTTP server are thin adapters around `Checker.check`: they read a
CheckContext from their wire format and turn the returned outcome into their own response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from authz_service import metrics
from authz_service.audit.check_record import audit_record, cancelled_record, journal_row
from authz_service.audit.journal import JournalUnavailableError
from authz_service.audit.metrics import CANCELLED, DROPPED
from authz_service.check_context import CheckContext
from authz_service.deadlines import Deadlines
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.logging_setup import correlation_id_var, request_id_var
from authz_service.pipeline import CheckOutcome, Pipeline
from authz_service.ports import AuditJournal

log = logging.getLogger(__name__)

AUDIT_UNAVAILABLE = Denial(
    ErrorCode.AUDIT_UNAVAILABLE,
    Stage.INTERNAL,
    "the audit trail cannot record the request now",
    headers=(("retry-after", "5"),),
)


def _deadline_exceeded() -> Denial:
    return Denial(
        ErrorCode.DEPENDENCY_UNAVAILABLE,
        Stage.INTERNAL,
        "the check did not finish in time",
        headers=(("retry-after", "1"),),
    )


class Checker:
    """Decide within the deadline, journal the decision, return it only once journaled."""

    def __init__(
        self, pipeline: Pipeline, journal: AuditJournal, *, timeout_seconds: float
    ) -> None:
        self._pipeline = pipeline
        self._journal = journal
        self.timeout_seconds = timeout_seconds
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._deadlines: Deadlines | None = None  # of the loop checks run on, made by the first

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait_idle(self, within: float) -> bool:
        """Wait until no check is in flight (shutdown); False when `within` ran out first."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def deadline(self, remaining: float | None, margin: float) -> float:
        """The check's own budget: the setting, or less when the caller waits less."""
        if remaining is None:
            return self.timeout_seconds
        return max(0.0, min(self.timeout_seconds, remaining - margin))

    async def check(self, check: CheckContext, budget_seconds: float) -> CheckOutcome:
        """The outcome (exactly one of denial and allowance set), already journaled.

        A check cancelled by its caller (Envoy gave up) is journaled as cancelled and the
        cancellation propagates.
        """
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._check(check, budget_seconds)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _check(self, check: CheckContext, budget_seconds: float) -> CheckOutcome:
        started = time.perf_counter()
        correlation_id_var.set(check.correlation_id)
        request_id_var.set(check.request_id)
        out = CheckOutcome()
        try:
            await self._run(check, out, budget_seconds)
        except asyncio.CancelledError:
            self._journal_cancelled(check, out, started)
            raise
        latency = time.perf_counter() - started
        try:
            written = self._journal_decision(check, out, latency * 1000)
            if written is not None:
                # shielded: a check cancelled now must not cancel its batch-mates' write
                await asyncio.shield(written)
        except JournalUnavailableError:
            metrics.CHECKS.labels(Stage.INTERNAL.value, "error", AUDIT_UNAVAILABLE.code.value).inc()
            return CheckOutcome(denial=AUDIT_UNAVAILABLE)
        metrics.CHECK_LATENCY.observe(time.perf_counter() - started)
        _count(out)
        return out

    def _journal_decision(
        self, check: CheckContext, out: CheckOutcome, latency_ms: float
    ) -> Awaitable[None] | None:
        try:
            row = journal_row(audit_record(check, out, latency_ms))
        except Exception as error:
            log.exception("audit record cannot be built; the check is refused")
            DROPPED.labels(reason="unencodable").inc()
            raise JournalUnavailableError("unencodable audit record") from error
        return self._journal.record(row, refusal=out.denial is AUDIT_UNAVAILABLE)

    def _journal_cancelled(self, check: CheckContext, out: CheckOutcome, started: float) -> None:
        """The caller gave up on the check: record what it did anyway (no answer is read)."""
        CANCELLED.inc()
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            self._journal.record(journal_row(cancelled_record(check, out, latency_ms)))
        except Exception:
            log.exception("cancelled check %r could not be journaled", check.request_id)
            DROPPED.labels(reason="unencodable").inc()

    async def _run(self, check: CheckContext, out: CheckOutcome, budget_seconds: float) -> None:
        """Fill `out` (the caller's, so a cancelled check still shows what was learned)."""
        if not self._journal.accepting:
            # Fail closed: a request whose audit record cannot be kept is not let through.
            out.denial = AUDIT_UNAVAILABLE
            return
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop.is_closed():
            deadlines = self._deadlines = Deadlines(asyncio.get_running_loop())
        task = asyncio.current_task(deadlines.loop)
        assert task is not None
        deadlines.start(task, budget_seconds)
        try:
            await self._pipeline.run(check, out)
        except asyncio.CancelledError:
            if not deadlines.overdue(task):
                raise
            _deadline_passed(out, budget_seconds)
        except Exception:
            log.exception("check failed")
            out.allowance = None
            out.denial = Denial(
                ErrorCode.INTERNAL_ERROR, Stage.INTERNAL, "the request could not be authorized"
            )
        finally:
            deadlines.finish(task)
        if out.denial is None and out.allowance is None:
            out.denial = Denial(ErrorCode.INTERNAL_ERROR, Stage.INTERNAL, "no decision")


def _deadline_passed(out: CheckOutcome, budget_seconds: float) -> None:
    log.warning("check deadline exceeded", extra={"timeout_s": budget_seconds})
    metrics.DEPENDENCY_ERRORS.labels("deadline", Stage.INTERNAL.value, "fail_closed").inc()
    out.allowance = None
    out.denial = _deadline_exceeded()


def _count(out: CheckOutcome) -> None:
    if out.denial is not None:
        denial = out.denial
        outcome = "error" if denial.status >= 500 else "deny"
        metrics.CHECKS.labels(denial.stage.value, outcome, denial.code.value).inc()
    else:
        metrics.CHECKS_ALLOWED.inc()
