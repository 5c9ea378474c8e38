"""The Authorization servicer: the only place that turns a pipeline outcome into a CheckResponse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationServicer
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]
from google.rpc import code_pb2, status_pb2

from authz_service import metrics
from authz_service.audit.journal import JournalUnavailableError
from authz_service.audit.metrics import CANCELLED, DROPPED
from authz_service.auditing import audit_record, cancelled_record, journal_row
from authz_service.check_context import CheckContext, context_from_check_request
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.logging_setup import correlation_id_var, request_id_var
from authz_service.pipeline import CheckOutcome, Pipeline
from authz_service.ports import AuditJournal
from authz_service.stages.decide import Allowance

log = logging.getLogger(__name__)

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
# Time kept back from the caller's gRPC deadline so the denial still reaches Envoy.
_DEADLINE_MARGIN_SECONDS = 0.02
_OK = status_pb2.Status(code=code_pb2.OK)
_AUDIT_UNAVAILABLE = Denial(
    ErrorCode.AUDIT_UNAVAILABLE,
    Stage.INTERNAL,
    "the audit trail cannot record the request now",
    headers=(("retry-after", "5"),),
)


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def allowed_response(allowance: Allowance) -> ext.CheckResponse:
    # built in place: half the cost of constructing each HeaderValueOption and copying it in
    response = ext.CheckResponse(status=_OK)
    add_header = response.ok_response.headers.add
    for key, value in allowance.headers:
        option = add_header(append_action=_OVERWRITE)
        option.header.key = key
        option.header.value = value
    fields = response.dynamic_metadata.fields
    for key, value in allowance.metadata.items():
        fields[key].string_value = value  # flat strings: cheaper than Struct.update()
    return response


def denied_response(denial: Denial, check: CheckContext) -> ext.CheckResponse:
    body = orjson.dumps(denial.problem(check.path_only or "/", check.correlation_id))
    headers = denial.response_headers()
    if check.correlation_id is not None:
        headers.append(("x-correlation-id", check.correlation_id))
    grpc_code = code_pb2.UNAUTHENTICATED if denial.status == 401 else code_pb2.PERMISSION_DENIED
    return ext.CheckResponse(
        status=status_pb2.Status(code=grpc_code, message=denial.code.value),
        denied_response=ext.DeniedHttpResponse(
            status=HttpStatus(code=denial.status),
            headers=[_header(k, v) for k, v in headers],
            body=body.decode(),
        ),
        dynamic_metadata=_struct(
            {
                "decision": "deny",
                "code": denial.code.value,
                "stage": denial.stage.value,
                "status": denial.status,
            }
        ),
    )


class AuthorizationService(AuthorizationServicer):  # type: ignore[misc]
    """envoy.service.auth.v3.Authorization on grpc.aio: decide within the deadline, journal
    the decision, answer only once the journal has it."""

    def __init__(
        self, pipeline: Pipeline, journal: AuditJournal, *, timeout_seconds: float
    ) -> None:
        self._pipeline = pipeline
        self._journal = journal
        self._timeout = timeout_seconds
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, within: float) -> bool:
        """Wait until no check is in flight (shutdown); False when `within` ran out first."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def Check(self, request: Any, context: Any) -> ext.CheckResponse:  # noqa: N802
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._check(request, context)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _check(self, request: Any, context: Any) -> ext.CheckResponse:
        started = time.perf_counter()
        check = context_from_check_request(request)
        correlation_id_var.set(check.correlation_id)
        request_id_var.set(check.request_id)
        out = CheckOutcome()
        try:
            await self._run(check, out, self._deadline(context))
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
            code = ErrorCode.AUDIT_UNAVAILABLE.value
            metrics.CHECKS.labels(Stage.INTERNAL.value, "error", code).inc()
            return denied_response(_AUDIT_UNAVAILABLE, check)
        metrics.CHECK_LATENCY.observe(time.perf_counter() - started)
        return self._respond(check, out)

    def _journal_decision(
        self, check: CheckContext, out: CheckOutcome, latency_ms: float
    ) -> Awaitable[None] | None:
        try:
            row = journal_row(audit_record(check, out, latency_ms))
        except Exception as error:
            log.exception("audit record cannot be built; the check is refused")
            DROPPED.labels(reason="unencodable").inc()
            raise JournalUnavailableError("unencodable audit record") from error
        refusal = out.denial is _AUDIT_UNAVAILABLE
        return self._journal.record(row, refusal=refusal)

    def _journal_cancelled(self, check: CheckContext, out: CheckOutcome, started: float) -> None:
        """Envoy gave up on the check: record what it did anyway (no answer will be read)."""
        CANCELLED.inc()
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            self._journal.record(journal_row(cancelled_record(check, out, latency_ms)))
        except Exception:
            log.exception("cancelled check %r could not be journaled", check.request_id)
            DROPPED.labels(reason="unencodable").inc()

    def _respond(self, check: CheckContext, out: CheckOutcome) -> ext.CheckResponse:
        if out.denial is not None:
            denial = out.denial
            outcome = "error" if denial.status >= 500 else "deny"
            metrics.CHECKS.labels(denial.stage.value, outcome, denial.code.value).inc()
            return denied_response(denial, check)
        assert out.allowance is not None
        metrics.CHECKS_ALLOWED.inc()
        return allowed_response(out.allowance)

    def _deadline(self, context: Any) -> float:
        remaining: float | None = context.time_remaining() if context is not None else None
        if remaining is None:
            return self._timeout
        return max(0.0, min(self._timeout, remaining - _DEADLINE_MARGIN_SECONDS))

    async def _run(self, check: CheckContext, out: CheckOutcome, budget_seconds: float) -> None:
        """Fill `out` (the caller's, so a cancelled check still shows what was learned)."""
        if not self._journal.accepting:
            # Fail closed: a request whose audit record cannot be kept is not let through.
            out.denial = _AUDIT_UNAVAILABLE
            return
        try:
            async with asyncio.timeout(budget_seconds):
                await self._pipeline.run(check, out)
        except TimeoutError:
            log.warning("check deadline exceeded", extra={"timeout_s": budget_seconds})
            metrics.DEPENDENCY_ERRORS.labels("deadline", Stage.INTERNAL.value, "fail_closed").inc()
            out.allowance = None
            out.denial = Denial(
                ErrorCode.DEPENDENCY_UNAVAILABLE,
                Stage.INTERNAL,
                "the check did not finish in time",
                headers=(("retry-after", "1"),),
            )
        except Exception:
            log.exception("check failed")
            out.allowance = None
            out.denial = Denial(
                ErrorCode.INTERNAL_ERROR, Stage.INTERNAL, "the request could not be authorized"
            )
        if out.denial is None and out.allowance is None:
            out.denial = Denial(ErrorCode.INTERNAL_ERROR, Stage.INTERNAL, "no decision")
