"""The pipeline through the servicer: response format, dependency failures, deadline, audit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ext

from authz_service.devtokens import sign_dev_token
from authz_service.pipeline import FailOpen, Pipeline
from authz_service.runtime_config import IDENTITY_HEADERS, RuntimeConfig
from authz_service.servicer import AuthorizationService
from authz_service.tokens import TokenVerifier
from tests.unit.authz.authz_helpers import (
    AUDIENCE,
    HS_ISSUER,
    SECRET,
    DownBudgetStore,
    FakePolicyEngine,
    RecordingAuditSink,
    make_pipeline,
)

CONTEXT = {
    "gateway_type": "CP",
    "route_id": "orders-list",
    "permission": "orders:read",
    "policy": "gateway/authz",
    "paid_only": "false",
    "budget_metric": "api_calls",
    "budget_cost": "1",
    "config_revision": "rev-1",
}


def _request(token: str | None, **context: str) -> ext.CheckRequest:
    headers = {
        "x-request-id": "req-9",
        "x-correlation-id": "corr-9",
        "x-causation-id": "cause-9",
        "user-agent": "test/1",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    http = ac.AttributeContext.HttpRequest(method="GET", path="/api/v1/orders?x=1", headers=headers)
    return ext.CheckRequest(
        attributes=ac.AttributeContext(
            request=ac.AttributeContext.Request(http=http),
            context_extensions={**CONTEXT, **context},
        )
    )


def _token(roles: tuple[str, ...] = ("customer",), **kw: Any) -> str:
    return sign_dev_token(
        SECRET, HS_ISSUER, AUDIENCE, "user-1", list(roles), customer_id="cust-1", **kw
    )


class _Context:
    def __init__(self, remaining: float | None = None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


async def _check(
    service: AuthorizationService, request: ext.CheckRequest, remaining: float | None = None
) -> ext.CheckResponse:
    return await service.Check(request, _Context(remaining))


def _problem(response: ext.CheckResponse) -> tuple[int, dict[str, str], dict[str, Any]]:
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return denied.status.code, headers, json.loads(denied.body)


@pytest.fixture
def audit() -> RecordingAuditSink:
    return RecordingAuditSink()


def _service(
    pipeline: Pipeline, audit: RecordingAuditSink, timeout: float = 1.0
) -> AuthorizationService:
    return AuthorizationService(pipeline, audit, timeout_seconds=timeout)


async def test_allowed_sets_identity_headers_and_audits(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    response = await _check(service, _request(_token()))
    assert response.status.code == 0
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert set(headers) == set(IDENTITY_HEADERS)
    assert headers["x-user-id"] == "user-1"
    assert headers["x-customer-id"] == "cust-1"
    assert headers["x-roles"] == "customer"
    assert headers["x-trial-mode"] == "false"
    assert headers["x-correlation-id"] == "corr-9"
    assert headers["x-budget-remaining"] == "99"
    assert response.dynamic_metadata["decision"] == "allow"
    assert response.dynamic_metadata["decision_id"] == headers["x-authz-decision-id"]
    (record,) = audit.records
    assert (record.decision, record.status_code, record.request_id) == ("allow", 200, "req-9")
    assert (record.correlation_id, record.causation_id) == ("corr-9", "cause-9")
    assert (record.user_id, record.budget_used, record.budget_limit) == ("user-1", 1, 100)
    assert record.path == "/api/v1/orders"
    assert record.opa_decisions == {
        "gateway/authz": {"allow": True, "reason": "allowed", "cached": False}
    }


async def test_denial_is_problem_json(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    status, headers, body = _problem(await _check(service, _request(_token(("guest",)))))
    assert status == 403
    assert headers["content-type"] == "application/problem+json"
    assert body == {
        "type": "https://gateway.example/problems/permission_denied",
        "title": "Permission denied",
        "status": 403,
        "detail": "permission 'orders:read' is required on the CP gateway",
        "instance": "/api/v1/orders",
        "code": "permission_denied",
        "stage": "authorize",
        "correlation_id": "corr-9",
        "permission": "orders:read",
        "gateway_type": "CP",
    }
    (record,) = audit.records
    assert (record.decision, record.denied_stage, record.problem_type) == (
        "deny",
        "authorize",
        "permission_denied",
    )


async def test_missing_token_is_401_with_www_authenticate(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    status, headers, body = _problem(await _check(service, _request(None)))
    assert (status, body["code"], body["stage"]) == (401, "token_missing", "authenticate")
    assert headers["www-authenticate"] == 'Bearer realm="gateway"'


async def test_opa_down_fails_closed_with_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, FakePolicyEngine(down=True)), audit)
    status, headers, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "dependency_unavailable", "policy")
    assert headers["retry-after"] == "1"
    assert audit.records[0].decision == "error"


async def test_policy_fail_open_lets_the_request_through(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingAuditSink,
) -> None:
    pipeline = make_pipeline(
        runtime_config, verifier, FakePolicyEngine(down=True), fail_open=FailOpen(policy=True)
    )
    response = await _check(_service(pipeline, audit), _request(_token()))
    assert response.HasField("ok_response")
    assert audit.records[0].shadow_denials == ["fail_open:policy:opa"]


async def test_redis_down_fails_closed_unless_budget_fails_open(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingAuditSink,
) -> None:
    closed = make_pipeline(runtime_config, verifier, policy_engine, DownBudgetStore())
    status, _, body = _problem(await _check(_service(closed, audit), _request(_token())))
    assert (status, body["stage"]) == (503, "budget")
    opened = make_pipeline(
        runtime_config, verifier, policy_engine, DownBudgetStore(), FailOpen(budget=True)
    )
    response = await _check(_service(opened, audit), _request(_token()))
    headers = {h.header.key for h in response.ok_response.headers}
    assert "x-budget-remaining" not in headers


class _SlowEngine(FakePolicyEngine):
    async def evaluate(self, path: str, input_doc: Any) -> Any:
        await asyncio.sleep(10)


async def test_a_check_never_outlives_its_deadline(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, _SlowEngine()), audit, timeout=5)
    started = asyncio.get_running_loop().time()
    status, _, body = _problem(await _check(service, _request(_token()), remaining=0.2))
    assert asyncio.get_running_loop().time() - started < 1
    assert (status, body["code"]) == (503, "dependency_unavailable")


class _BrokenEngine(FakePolicyEngine):
    async def evaluate(self, path: str, input_doc: Any) -> Any:
        raise KeyError("bug")


async def test_unexpected_error_is_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingAuditSink,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, _BrokenEngine()), audit)
    status, _, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "internal_error", "internal")
    assert "bug" not in json.dumps(body)


async def test_a_failing_audit_sink_never_breaks_the_check(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    class Exploding(RecordingAuditSink):
        def submit(self, record: Any) -> None:
            raise RuntimeError("queue full")

    service = _service(make_pipeline(runtime_config, verifier, policy_engine), Exploding())
    assert (await _check(service, _request(_token()))).HasField("ok_response")


async def test_a_full_audit_trail_fails_closed_with_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    audit = RecordingAuditSink(accepting=False)
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    status, headers, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "audit_unavailable", "internal")
    assert headers["retry-after"] == "5"
    assert policy_engine.calls == [], "no stage runs once the audit trail refuses records"
    assert [r.problem_type for r in audit.records] == ["audit_unavailable"]
