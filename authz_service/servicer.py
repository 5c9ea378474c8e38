"""The Authorization servicer: the only place that turns a pipeline outcome into a CheckResponse."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationServicer
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]
from google.rpc import code_pb2, status_pb2

from authz_service.check_context import CheckContext, context_from_check_request
from authz_service.checker import Checker
from authz_service.errors import Denial
from authz_service.pipeline import Pipeline
from authz_service.ports import AuditJournal
from authz_service.stages.decide import Allowance
from gateway_contract.headers import CORRELATION_HEADER

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
        headers.append((CORRELATION_HEADER, check.correlation_id))
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
    """envoy.service.auth.v3.Authorization on grpc.aio: a thin adapter around the Checker."""

    def __init__(
        self, pipeline: Pipeline, journal: AuditJournal, *, timeout_seconds: float
    ) -> None:
        self.checker = Checker(pipeline, journal, timeout_seconds=timeout_seconds)

    async def wait_idle(self, within: float) -> bool:
        """Wait until no check is in flight (shutdown); False when `within` ran out first."""
        return await self.checker.wait_idle(within)

    async def Check(self, request: Any, context: Any) -> ext.CheckResponse:  # noqa: N802
        check = context_from_check_request(request)
        remaining: float | None = context.time_remaining() if context is not None else None
        budget = self.checker.deadline(remaining, _DEADLINE_MARGIN_SECONDS)
        out = await self.checker.check(check, budget)
        if out.denial is not None:
            return denied_response(out.denial, check)
        assert out.allowance is not None
        return allowed_response(out.allowance)
