"""The Authorization servicer: the only place that turns a pipeline outcome into a CheckResponse."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationServicer
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]
from google.rpc import code_pb2, status_pb2

from authz_service import metrics
from authz_service.auditing import submit_audit
from authz_service.check_context import CheckContext, context_from_check_request
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.logging_setup import correlation_id_var, request_id_var
from authz_service.pipeline import CheckOutcome, Pipeline
from authz_service.ports import AuditSink
from authz_service.stages.decide import Allowance

log = logging.getLogger(__name__)

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
# Time kept back from the caller's gRPC deadline so the denial still reaches Envoy.
_DEADLINE_MARGIN_SECONDS = 0.02
_OK = status_pb2.Status(code=code_pb2.OK)


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
    """envoy.service.auth.v3.Authorization on grpc.aio: run the pipeline within the deadline."""

    def __init__(self, pipeline: Pipeline, audit: AuditSink, *, timeout_seconds: float) -> None:
        self._pipeline = pipeline
        self._audit = audit
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
        out = await self._run(check, self._deadline(context))
        latency = time.perf_counter() - started
        metrics.CHECK_LATENCY.observe(latency)
        submit_audit(self._audit, check, out, latency * 1000)
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

    async def _run(self, check: CheckContext, budget_seconds: float) -> CheckOutcome:
        out = CheckOutcome()
        if not self._audit.accepting:
            # Fail closed: a request whose audit row would be lost is not let through.
            out.denial = Denial(
                ErrorCode.AUDIT_UNAVAILABLE,
                Stage.INTERNAL,
                "the audit trail cannot record the request now",
                headers=(("retry-after", "5"),),
            )
            return out
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
        return out
