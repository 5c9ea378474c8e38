"""The real OPA server and the embedded regopy engine give the same decisions on policies/."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_service.adapters.opa_http import OpaHttpEngine
from authz_service.adapters.regopy_engine import RegopyEngine
from authz_service.errors import DependencyUnavailableError
from devstack import OpaService
from tests.support.free_ports import free_port

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
NOW = 1_750_000_000


@pytest.fixture
async def opa(opa_service: OpaService) -> AsyncIterator[OpaHttpEngine]:
    engine = OpaHttpEngine(opa_service.url, timeout_seconds=2, pool_size=4)
    yield engine
    await engine.close()


@pytest.fixture
async def regopy() -> AsyncIterator[RegopyEngine]:
    engine = RegopyEngine(POLICY_DIR)
    yield engine
    await engine.close()


def _input(trial: bool, ends: float | None, paid_only: bool, plan: str = "trial") -> dict[str, Any]:
    return {
        "principal": {"user_id": "u", "customer_id": None, "roles": ["customer"],
                      "trial_mode": trial, "trial_ends_at": ends, "plan": plan},
        "request": {"method": "GET", "path": "/api/v1/reports", "route_id": "reports",
                    "gateway_type": "CP", "paid_only": paid_only, "headers": {}},
        "time": {"now_ns": NOW * 1_000_000_000, "now": "2025-06-15T15:06:40Z"},
    }  # fmt: skip


CASES = [
    (_input(False, None, False), {"allow": True, "reason": "allowed"}),
    (_input(False, None, True), {"allow": True, "reason": "allowed"}),
    (_input(True, NOW + 60, False), {"allow": True, "reason": "allowed"}),
    (_input(True, NOW - 60, False), {"allow": False, "reason": "trial_expired"}),
    (_input(True, NOW + 60, True), {"allow": False, "reason": "paid_only"}),
    (_input(True, NOW - 60, True), {"allow": False, "reason": "trial_expired"}),
]


@pytest.mark.parametrize(("input_doc", "expected"), CASES)
async def test_both_engines_decide_as_specified(
    opa: OpaHttpEngine, regopy: RegopyEngine, input_doc: dict[str, Any], expected: dict[str, Any]
) -> None:
    from_opa = await opa.evaluate("gateway/authz", input_doc)
    from_regopy = await regopy.evaluate("gateway/authz", input_doc)
    assert from_opa is not None
    assert from_regopy is not None
    assert {k: from_opa[k] for k in ("allow", "reason")} == expected
    assert {k: from_regopy[k] for k in ("allow", "reason")} == expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    trial=st.booleans(),
    ends=st.one_of(st.none(), st.integers(NOW - 10**6, NOW + 10**6)),
    paid_only=st.booleans(),
    plan=st.sampled_from(["trial", "standard", "enterprise"]),
)
async def test_engines_agree_on_generated_inputs(
    opa: OpaHttpEngine,
    regopy: RegopyEngine,
    trial: bool,
    ends: int | None,
    paid_only: bool,
    plan: str,
) -> None:
    input_doc = _input(trial, ends, paid_only, plan)
    assert await opa.evaluate("gateway/authz", input_doc) == await regopy.evaluate(
        "gateway/authz", input_doc
    )


async def test_undefined_document_is_none_in_both(opa: OpaHttpEngine, regopy: RegopyEngine) -> None:
    assert await opa.evaluate("gateway/no_such_rule", _input(False, None, False)) is None
    assert await regopy.evaluate("gateway/no_such_rule", _input(False, None, False)) is None


async def test_unreachable_opa_is_a_dependency_failure() -> None:
    port = free_port()  # nothing listens on it
    engine = OpaHttpEngine(f"http://127.0.0.1:{port}", timeout_seconds=0.5, pool_size=1)
    try:
        started = time.monotonic()
        with pytest.raises(DependencyUnavailableError) as info:
            await engine.evaluate("gateway/authz", _input(False, None, False))
        assert info.value.dependency == "opa"
        assert time.monotonic() - started < 2
        assert not await engine.healthy()
    finally:
        await engine.close()
