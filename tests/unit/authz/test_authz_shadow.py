"""Shadow mode: a shadowed stage evaluates and records its denial but never denies."""

from __future__ import annotations

from typing import Any

from envoy.service.auth.v3 import external_auth_pb2 as ext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_service import metrics
from authz_service.adapters.memory_budget import InProcessLedger
from authz_service.devtokens import sign_dev_token
from authz_service.pipeline import FailOpen
from authz_service.servicer import AuthorizationService
from authz_service.tokens import TokenVerifier
from gateway_contract.runtime import RuntimeConfig
from tests.support.check_requests import check_request
from tests.unit.authz.authz_helpers import (
    AUDIENCE,
    HS_ISSUER,
    RUNTIME,
    SECRET,
    DownBudgetStore,
    FakePolicyEngine,
    RecordingJournal,
    make_pipeline,
)

CONTEXT = {
    "gateway_type": "PLANT",
    "route_id": "orders-list",
    "permission": "orders:read",
    "policy": "gateway/authz",
    "paid_only": "false",
    "budget_metric": "api_calls",
    "budget_cost": "1",
    "config_revision": "rev-1",
}
CODES = {
    "authorize": "permission_denied",
    "policy": "paid_only",
    "budget": "dependency_unavailable",
}
ORDER = ("authenticate", "authorize", "policy", "budget")


def _request(token: str | None, shadow: str | None) -> ext.CheckRequest:
    context = dict(CONTEXT) if shadow is None else {**CONTEXT, "shadow": shadow}
    headers = {"x-request-id": "req-s", "x-correlation-id": "corr-s"}
    return check_request(token=token, headers=headers, context=context)


def _token(role: str = "customer") -> str:
    return sign_dev_token(SECRET, HS_ISSUER, AUDIENCE, "user-1", [role], customer_id="cust-1")


def _service(
    config: RuntimeConfig, verifier: TokenVerifier, failing: set[str], audit: RecordingJournal
) -> AuthorizationService:
    engine = FakePolicyEngine()
    if "policy" in failing:
        engine.answer = {"allow": False, "reason": "paid_only"}
    store: Any = DownBudgetStore() if "budget" in failing else InProcessLedger()
    pipeline = make_pipeline(config, verifier, engine, store)
    return AuthorizationService(pipeline, audit, timeout_seconds=1.0)


def _shadow_count(stage: str, code: str) -> float:
    value = metrics.SHADOW_DENIALS.labels(stage, code)._value.get()
    return float(value)


# the fixtures are immutable (config, verifier): sharing them between examples is safe
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    failing=st.sets(st.sampled_from(sorted(CODES))),
    shadow=st.sets(st.sampled_from(ORDER)),
)
async def test_a_shadowed_stage_never_blocks_and_always_records(
    runtime_config: RuntimeConfig, verifier: TokenVerifier, failing: set[str], shadow: set[str]
) -> None:
    audit = RecordingJournal()
    service = _service(runtime_config, verifier, failing, audit)
    token = _token("guest" if "authorize" in failing else "customer")
    before = {stage: _shadow_count(stage, code) for stage, code in CODES.items()}
    response = await service.Check(_request(token, ",".join(sorted(shadow))), None)
    enforced_failures = [s for s in ORDER if s in failing and s not in shadow]
    stop = ORDER.index(enforced_failures[0]) if enforced_failures else len(ORDER)
    expected = [f"{s}:{CODES[s]}" for s in ORDER[:stop] if s in failing]
    (row,) = audit.rows
    assert row["shadow_denials"] == expected
    if enforced_failures:
        assert response.status.code != 0
        assert row["denied_stage"] == enforced_failures[0]
        assert row["problem_type"] == CODES[enforced_failures[0]]
    else:
        assert response.status.code == 0
        assert row["decision"] == "allow"
    for stage, code in CODES.items():
        recorded = f"{stage}:{code}" in expected
        assert _shadow_count(stage, code) == before[stage] + recorded


async def test_shadowed_authentication_without_a_token_passes_anonymously(
    runtime_config: RuntimeConfig, verifier: TokenVerifier
) -> None:
    audit = RecordingJournal()
    service = _service(runtime_config, verifier, set(), audit)
    response = await service.Check(_request(None, "authenticate,authorize,policy,budget"), None)
    assert response.status.code == 0
    headers = {h.header.key for h in response.ok_response.headers}
    assert "x-user-id" not in headers  # nobody was authenticated: no identity is forwarded
    assert audit.rows[0]["shadow_denials"] == ["authenticate:token_missing"]
    assert audit.rows[0]["user_id"] is None


async def test_shadowed_authentication_with_an_enforced_rbac_still_denies(
    runtime_config: RuntimeConfig, verifier: TokenVerifier
) -> None:
    """Nobody cannot hold a permission: the enforced stage denies with the 401 (fail closed)."""
    audit = RecordingJournal()
    service = _service(runtime_config, verifier, set(), audit)
    response = await service.Check(_request(None, "authenticate"), None)
    assert response.denied_response.status.code == 401
    (row,) = audit.rows
    assert (row["problem_type"], row["shadow_denials"]) == (
        "token_missing",
        ["authenticate:token_missing"],
    )


async def test_without_the_extension_the_runtime_config_decides(verifier: TokenVerifier) -> None:
    raw = {**RUNTIME, "shadow": ["authorize"]}
    config = RuntimeConfig.model_validate(raw)
    audit = RecordingJournal()
    service = _service(config, verifier, {"authorize"}, audit)
    assert (await service.Check(_request(_token("guest"), None), None)).status.code == 0
    assert (await service.Check(_request(_token("guest"), ""), None)).status.code != 0
    assert [r["shadow_denials"] for r in audit.rows] == [["authorize:permission_denied"], []]


async def test_fail_open_and_shadow_denials_stay_distinguishable(
    runtime_config: RuntimeConfig, verifier: TokenVerifier
) -> None:
    audit = RecordingJournal()
    engine = FakePolicyEngine(down=True)
    pipeline = make_pipeline(
        runtime_config, verifier, engine, DownBudgetStore(), FailOpen(policy=True)
    )
    service = AuthorizationService(pipeline, audit, timeout_seconds=1.0)
    assert (await service.Check(_request(_token(), "budget"), None)).status.code == 0
    assert audit.rows[0]["shadow_denials"] == [
        "budget:dependency_unavailable",
        "fail_open:policy:opa",
    ]
