"""The GatewayAdmin operator API (Explain, Budget, Reload) on its own loopback-only gRPC port."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]

from authz_service._proto.gateway.admin.v1 import admin_pb2 as pb
from authz_service._proto.gateway.admin.v1 import admin_pb2_grpc as pb_grpc
from authz_service.errors import DependencyUnavailableError
from authz_service.explain import Explainer, ExplainInput, ExplainInputError, Explanation
from authz_service.pipeline import Pipeline
from authz_service.principal import ClaimError, principal_from_claims
from authz_service.reload import Reloader
from authz_service.stages.budget import budget_windows
from gateway_contract.runtime import BudgetSubject

log = logging.getLogger(__name__)


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def explanation_message(result: Explanation) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        route_id=result.route_id,
        allowed=result.allowed,
        status=result.status,
        config_revision=result.config_revision,
        policy_revision=result.policy_revision,
        stages=[
            pb.StageTrace(
                stage=s.stage, outcome=s.outcome, code=s.code, detail=s.detail, data=_struct(s.data)
            )
            for s in result.stages
        ],
    )


class GatewayAdminService(pb_grpc.GatewayAdminServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        reloader: Reloader,
        *,
        dev_claims: bool,
        timeout_seconds: float,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self._pipeline = pipeline
        # with workers: the others reload too (the supervisor passes a SIGHUP on to all)
        self._on_applied = on_applied
        self._explainer = Explainer(pipeline, timeout_seconds=timeout_seconds)
        self._reloader = reloader
        self._dev_claims = dev_claims

    async def Explain(self, request: Any, context: Any) -> pb.ExplainResponse:  # noqa: N802
        principal = None
        if request.WhichOneof("credential") == "claims":
            if not self._dev_claims:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "raw claims are accepted only with AUTHZ_ADMIN_DEV_CLAIMS=true; send a token",
                )
            try:
                claims = json_format.MessageToDict(request.claims)
                principal = principal_from_claims({"exp": time.time() + 3600, **claims})
            except ClaimError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        query = ExplainInput(
            gateway_type=request.gateway_type or "PLANT",
            method=request.method,
            path=request.path,
            token=request.token or None,
            principal=principal,
            headers=dict(request.headers),
        )
        try:
            return explanation_message(await self._explainer.explain(query))
        except ExplainInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    async def Budget(self, request: Any, context: Any) -> pb.BudgetResponse:  # noqa: N802
        try:
            subject = BudgetSubject.parse(request.subject)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
        budgets = self._pipeline.config.budgets
        plan = request.plan or "standard"
        metrics = {*budgets.plans.get(plan, {}), *budgets.overrides.of(subject)}
        now = time.time()
        reply = pb.BudgetResponse()
        for metric in sorted(metrics):
            store = self._pipeline.budget_store
            windows, names = budget_windows(
                budgets, plan, subject, metric, now, counter_key=store.counter_key
            )
            try:
                usage = await store.peek(windows, 0)
            except DependencyUnavailableError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            for window, (name, resets_at), used in zip(windows, names, usage.used, strict=True):
                reply.windows.append(
                    pb.BudgetWindow(
                        metric=metric,
                        window=name,
                        used=used,
                        limit=window.limit,
                        remaining=max(0, window.limit - used),
                        resets_in_seconds=max(0, int(resets_at - now)),
                    )
                )
        return reply

    async def Reload(self, request: Any, context: Any) -> pb.ReloadResponse:  # noqa: N802
        result = await self._reloader.reload()
        if result.applied and self._on_applied is not None:
            self._on_applied()  # validated here first: a refused revision reaches no worker
        return pb.ReloadResponse(
            applied=result.applied,
            config_revision=result.config_revision,
            policy_revision=result.policy_revision,
            error=result.error,
        )


def admin_server(service: GatewayAdminService, address: str) -> grpc.aio.Server:
    """A server of its own, so the operator API never shares a port with Envoy's checks."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GatewayAdminServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"AUTHZ_ADMIN_ADDRESS: cannot listen on {address}") from exc
    if port == 0:
        raise OSError(f"AUTHZ_ADMIN_ADDRESS: cannot listen on {address}")
    return server
