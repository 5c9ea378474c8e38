"""The pipeline through the servicer: response format, dependency failures, deadline, audit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ext

from authz_service.devtokens import sign_dev_token
from authz_service.pipeline import FailOpen, Pipeline
from authz_service.servicer import AuthorizationService
from authz_service.tokens import TokenVerifier
from gateway_contract.headers import IDENTITY_HEADERS
from gateway_contract.runtime import RuntimeConfig
from tests.support.check_requests import check_request
from tests.unit.authz.authz_helpers import (
    AUDIENCE,
    HS_ISSUER,
    SECRET,
    DownBudgetStore,
    FakePolicyEngine,
    RecordingJournal,
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
    return check_request(
        path="/api/v1/orders?x=1", token=token, headers=headers, context={**CONTEXT, **context}
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
def audit() -> RecordingJournal:
    return RecordingJournal()


def _service(
    pipeline: Pipeline, audit: RecordingJournal, timeout: float = 1.0
) -> AuthorizationService:
    return AuthorizationService(pipeline, audit, timeout_seconds=timeout)


async def test_allowed_sets_identity_headers_and_audits(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingJournal,
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
    (row,) = audit.rows
    assert (row["decision"], row["authz_status_code"], row["request_id"]) == ("allow", 200, "req-9")
    assert (row["correlation_id"], row["causation_id"]) == ("corr-9", "cause-9")
    assert (row["user_id"], row["budget_used"], row["budget_limit"]) == ("user-1", 1, 100)
    assert row["path"] == "/api/v1/orders"
    assert row["opa_decisions"] == {
        "gateway/authz": {"allow": True, "reason": "allowed", "cached": False}
    }
    assert isinstance(row["decided_at"], int)
    assert audit.refusals == [False]


async def test_denial_is_problem_json(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingJournal,
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
    (row,) = audit.rows
    assert (row["decision"], row["denied_stage"], row["problem_type"]) == (
        "deny",
        "authorize",
        "permission_denied",
    )


async def test_missing_token_is_401_with_www_authenticate(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingJournal,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    status, headers, body = _problem(await _check(service, _request(None)))
    assert (status, body["code"], body["stage"]) == (401, "token_missing", "authenticate")
    assert headers["www-authenticate"] == 'Bearer realm="gateway"'


async def test_opa_down_fails_closed_with_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingJournal,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, FakePolicyEngine(down=True)), audit)
    status, headers, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "dependency_unavailable", "policy")
    assert headers["retry-after"] == "1"
    assert audit.rows[0]["decision"] == "error"


async def test_policy_fail_open_lets_the_request_through(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingJournal,
) -> None:
    pipeline = make_pipeline(
        runtime_config, verifier, FakePolicyEngine(down=True), fail_open=FailOpen(policy=True)
    )
    response = await _check(_service(pipeline, audit), _request(_token()))
    assert response.HasField("ok_response")
    assert audit.rows[0]["shadow_denials"] == ["fail_open:policy:opa"]


async def test_redis_down_fails_closed_unless_budget_fails_open(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
    audit: RecordingJournal,
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
        await asyncio.sleep(10)  # the behaviour under test: a policy slower than the deadline


async def test_a_check_never_outlives_its_deadline(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingJournal,
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
    audit: RecordingJournal,
) -> None:
    service = _service(make_pipeline(runtime_config, verifier, _BrokenEngine()), audit)
    status, _, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "internal_error", "internal")
    assert "bug" not in json.dumps(body)


async def test_a_journal_that_cannot_write_refuses_the_check_with_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    service = _service(
        make_pipeline(runtime_config, verifier, policy_engine), RecordingJournal(broken=True)
    )
    status, headers, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"]) == (503, "audit_unavailable")
    assert body["correlation_id"] == "corr-9"
    assert headers["content-type"] == "application/problem+json"


async def test_a_full_audit_trail_fails_closed_with_503(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    audit = RecordingJournal(accepting=False)
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    status, headers, body = _problem(await _check(service, _request(_token())))
    assert (status, body["code"], body["stage"]) == (503, "audit_unavailable", "internal")
    assert headers["retry-after"] == "5"
    assert policy_engine.calls == [], "no stage runs once the audit trail refuses records"
    assert [r["problem_type"] for r in audit.rows] == ["audit_unavailable"]
    assert audit.refusals == [True], "the refusal is journaled as one, within the headroom"


async def test_the_answer_waits_for_its_record_to_be_written(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    audit = RecordingJournal(written=written)
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    check = asyncio.create_task(_check(service, _request(_token())))
    while not audit.rows:
        await asyncio.sleep(0)
    for _ in range(5):  # turns of the loop in which a wrong answer would go out (no clock)
        await asyncio.sleep(0)
    assert not check.done(), "answered before the journal had the record"
    written.set_result(None)
    assert (await check).HasField("ok_response")


class _HangingEngine(FakePolicyEngine):
    async def evaluate(self, path: str, input_doc: Any) -> Any:
        self.calls.append(input_doc)
        await asyncio.Event().wait()


async def test_a_cancelled_check_is_journaled_with_what_it_learned(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    audit: RecordingJournal,
) -> None:
    """Envoy's timeout cancels the call: the record says cancelled, who, and where it was."""
    engine = _HangingEngine()
    service = _service(make_pipeline(runtime_config, verifier, engine), audit, timeout=30)
    check = asyncio.create_task(_check(service, _request(_token())))
    while not engine.calls:
        await asyncio.sleep(0)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    (row,) = audit.rows
    assert (row["decision"], row["authz_status_code"]) == ("cancelled", None)
    assert (row["denied_stage"], row["problem_type"]) == ("policy", "check_cancelled")
    assert (row["user_id"], row["customer_id"]) == ("user-1", "cust-1")
    assert row["budget_used"] is None, "the budget stage never ran: nothing was charged"


async def test_a_check_cancelled_while_its_batch_is_written_does_not_cancel_the_batch(
    runtime_config: RuntimeConfig,
    verifier: TokenVerifier,
    policy_engine: FakePolicyEngine,
) -> None:
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    audit = RecordingJournal(written=written)
    service = _service(make_pipeline(runtime_config, verifier, policy_engine), audit)
    check = asyncio.create_task(_check(service, _request(_token())))
    while not audit.rows:
        await asyncio.sleep(0)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    assert not written.cancelled(), "other checks of the batch still wait for it"
    assert [r["decision"] for r in audit.rows] == ["allow"], "decided, so not journaled twice"
    written.set_result(None)
