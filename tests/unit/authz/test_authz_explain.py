"""Explain: route matching, the stage trace, no side effects, and the same decision as Check."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from authz_service.adapters.memory_budget import InProcessLedger
from authz_service.adapters.policy_evaluator import PolicyEvaluator
from authz_service.adapters.regopy_engine import RegopyEngine
from authz_service.explain import Explainer, ExplainInput, ExplainInputError
from authz_service.pipeline import Pipeline
from authz_service.principal import principal_from_claims
from authz_service.servicer import AuthorizationService
from authz_service.tokens import TokenVerifier
from gateway_contract.matcher import match_route, path_matches
from gateway_contract.runtime import GatewayType, PathMatch, RuntimeConfig
from tests.authz_explain_cases import (
    RUNTIME,
    Case,
    cases,
    check_request,
    expected_route,
    token_for,
)
from tests.unit.authz.authz_helpers import AUDIENCE, HS_ISSUER, SECRET, RecordingJournal

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        (PathMatch(prefix="/api/v1/orders"), "/api/v1/orders", True),
        (PathMatch(prefix="/api/v1/orders"), "/api/v1/orders/7", True),
        (PathMatch(prefix="/api/v1/orders"), "/api/v1/orders?x=1", True),
        (PathMatch(prefix="/api/v1/orders"), "/api/v1/ordersx", False),
        (PathMatch(prefix="/api/"), "/api/anything", True),
        (PathMatch(exact="/health"), "/health?probe=1", True),
        (PathMatch(exact="/health"), "/health/", False),
        (PathMatch(regex="/o/[0-9]+"), "/o/12", True),
        (PathMatch(regex="/o/[0-9]+"), "/o/12/x", False),  # a full match, as RE2 in Envoy
    ],
)
def test_path_matching_mirrors_envoy(match: PathMatch, path: str, expected: bool) -> None:
    assert path_matches(match, path) is expected


def test_first_route_of_the_gateway_type_and_method_wins() -> None:
    config = RuntimeConfig.model_validate(RUNTIME)
    found = match_route(config, GatewayType.PP, "GET", "/api/v1/orders")
    assert found is None  # orders-list is not on PP
    found = match_route(config, GatewayType.CP, "GET", "/api/v1/orders/1")
    assert found is not None
    assert found.route_id == "orders-list"


@pytest.fixture(scope="module")
def engine() -> RegopyEngine:
    return RegopyEngine(POLICY_DIR)


def _parts(engine: RegopyEngine, verifier: TokenVerifier) -> tuple[Pipeline, InProcessLedger]:
    ledger = InProcessLedger()
    evaluator = PolicyEvaluator(engine, cache_seconds=0, cache_size=0, headers=(), revision="p1")
    config = RuntimeConfig.model_validate(RUNTIME)
    return Pipeline(config, verifier, evaluator, ledger, max_token_bytes=4096), ledger


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases)
async def test_explain_decides_as_check_and_changes_nothing(
    engine: RegopyEngine, verifier: TokenVerifier, case: Case
) -> None:
    pipeline, ledger = _parts(engine, verifier)
    audit = RecordingJournal()
    service = AuthorizationService(pipeline, audit, timeout_seconds=2.0)
    explainer = Explainer(pipeline, timeout_seconds=2.0)
    token = token_for(case, SECRET, HS_ISSUER, AUDIENCE)
    for _ in range(3):  # the third round runs into the trial budget
        before, records = copy.deepcopy(ledger._counters), len(audit.rows)
        query = ExplainInput(case.gateway_type, case.method, case.path, token=token)
        explained = await explainer.explain(query)
        assert ledger._counters == before  # no budget consumed
        assert len(audit.rows) == records  # and no audit row
        route = expected_route(case)
        assert explained.route_id == (route or "")
        if route is None:
            assert (explained.allowed, explained.status) == (False, 404)
            return
        if RUNTIME["routes"][route].get("public"):
            assert (explained.allowed, explained.status) == (True, 200)
            return
        response = await service.Check(check_request(case, route, token), None)
        assert len(audit.rows) == records + 1
        assert explained.allowed is (response.status.code == 0)
        if not explained.allowed:
            assert explained.status == response.denied_response.status.code
            denied = [s for s in explained.stages if s.outcome == "deny"]
            assert denied[-1].code == response.dynamic_metadata["code"]


async def test_trace_shows_principal_permissions_policy_and_budget(
    engine: RegopyEngine, verifier: TokenVerifier
) -> None:
    pipeline, _ = _parts(engine, verifier)
    claims = {"sub": "u1", "roles": ["customer"], "customer_id": "c1", "plan": "trial",
              "trial_mode": True}  # fmt: skip
    explained = await Explainer(pipeline, timeout_seconds=2.0).explain(
        ExplainInput("PLANT", "GET", "/api/v1/orders", principal=principal_from_claims(
            {"exp": 2_000_000_000, **claims}))
    )  # fmt: skip
    assert explained.allowed
    stages = {s.stage: s for s in explained.stages}
    assert list(stages) == ["authenticate", "authorize", "policy", "budget", "decide"]
    assert stages["authenticate"].data["principal"]["user_id"] == "u1"
    assert stages["authorize"].data["permission_needed"] == "orders:read"
    assert "orders:read" in stages["authorize"].data["permissions_held"]
    assert stages["policy"].data["input"]["request"]["route_id"] == "orders-list"
    assert stages["policy"].data["result"] == {"allow": True, "reason": "allowed"}
    assert stages["budget"].data["budget"]["limit"] == 3
    assert explained.policy_revision == "p1"


async def test_bad_gateway_type_is_an_input_error(
    engine: RegopyEngine, verifier: TokenVerifier
) -> None:
    pipeline, _ = _parts(engine, verifier)
    with pytest.raises(ExplainInputError, match="gateway_type"):
        await Explainer(pipeline, timeout_seconds=1.0).explain(ExplainInput("XX", "GET", "/"))


@pytest.mark.parametrize(
    ("path", "route_id", "status"),
    [
        # Envoy normalizes before it routes: Explain answers for the route Envoy picks
        ("/api//v1/./orders", "orders-list", 401),
        ("/api/v1/x/../%6Frders/7", "orders-list", 401),
        ("/api/v1/ordersx", "", 404),
        # an escaped slash is Envoy's 400, before any route or check
        ("/api/v1/orders%2F7", "", 400),
    ],
)
async def test_explain_routes_the_path_as_envoy_does(
    engine: RegopyEngine, verifier: TokenVerifier, path: str, route_id: str, status: int
) -> None:
    pipeline, _ = _parts(engine, verifier)
    explained = await Explainer(pipeline, timeout_seconds=2.0).explain(
        ExplainInput("PLANT", "GET", path)
    )
    assert (explained.route_id, explained.status, explained.allowed) == (route_id, status, False)
