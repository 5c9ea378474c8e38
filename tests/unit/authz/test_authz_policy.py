"""Stage 3: the policy input, reason → code mapping, fail-closed undefined, the decision cache."""

from __future__ import annotations

import time

import pytest

from authz_service.adapters.policy_evaluator import PolicyEvaluator
from authz_service.adapters.regopy_engine import RegopyEngine
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import PolicyDecision, PolicyLoadError
from authz_service.principal import Principal
from authz_service.stages.policy import evaluate_policy
from tests.unit.authz.authz_helpers import POLICY_DIR, FakePolicyEngine, check_context


def _principal(trial: bool = False, ends: float | None = None) -> Principal:
    plan = "trial" if trial else "standard"
    return Principal("u1", "c1", ("customer",), trial, ends, plan, "jti", "iss", time.time() + 60)


def _evaluator(
    engine: object, cache_seconds: float = 0, clock: object = time.time
) -> PolicyEvaluator:
    return PolicyEvaluator(
        engine,  # type: ignore[arg-type]
        cache_seconds=cache_seconds,
        cache_size=100,
        headers=("user-agent",),
        clock=clock,  # type: ignore[arg-type]
    )


async def test_input_carries_principal_request_and_time(policy_engine: FakePolicyEngine) -> None:
    ctx = check_context(paid_only=True, headers={"user-agent": "ua/1", "cookie": "secret"})
    result = await evaluate_policy(ctx, _principal(), _evaluator(policy_engine))
    assert isinstance(result, PolicyDecision)
    assert result.allow
    sent = policy_engine.calls[0]
    assert sent["principal"]["customer_id"] == "c1"
    assert sent["request"] == {
        "method": "GET",
        "path": "/api/v1/orders",
        "route_id": "orders-list",
        "gateway_type": "PLANT",
        "paid_only": True,
        "headers": {"user-agent": "ua/1"},
    }
    assert abs(sent["time"]["now_ns"] / 1e9 - time.time()) < 5
    assert sent["time"]["now"].endswith("Z")


async def test_no_policy_path_skips_the_stage(policy_engine: FakePolicyEngine) -> None:
    assert (
        await evaluate_policy(check_context(policy=""), _principal(), _evaluator(policy_engine))
        is None
    )
    assert policy_engine.calls == []


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"allow": False, "reason": "trial_expired"}, ErrorCode.TRIAL_EXPIRED),
        ({"allow": False, "reason": "paid_only"}, ErrorCode.PAID_ONLY),
        ({"allow": False, "reason": "geo_blocked"}, ErrorCode.POLICY_DENIED),
        ({"allow": "yes"}, ErrorCode.POLICY_DENIED),
        (None, ErrorCode.POLICY_DENIED),
    ],
)
async def test_denials(answer: dict[str, object] | None, code: ErrorCode) -> None:
    engine = FakePolicyEngine(answer=answer)
    denial = await evaluate_policy(check_context(), _principal(), _evaluator(engine))
    assert isinstance(denial, Denial)
    assert (denial.code, denial.stage, denial.status) == (code, Stage.POLICY, 403)


async def test_decisions_are_cached_for_the_ttl() -> None:
    engine = FakePolicyEngine()
    now = [1_000.0]
    evaluator = _evaluator(engine, cache_seconds=2, clock=lambda: now[0])
    first = await evaluate_policy(check_context(), _principal(), evaluator)
    second = await evaluate_policy(check_context(), _principal(), evaluator)
    assert isinstance(first, PolicyDecision)
    assert isinstance(second, PolicyDecision)
    assert (first.cached, second.cached, len(engine.calls)) == (False, True, 1)
    now[0] += 3
    await evaluate_policy(check_context(), _principal(), evaluator)
    assert len(engine.calls) == 2


async def test_the_cache_key_is_exactly_what_the_input_reads() -> None:
    """A hit builds no input: its key must change whenever the input would, and only then."""
    engine = FakePolicyEngine()
    evaluator = _evaluator(engine, cache_seconds=60, clock=lambda: 1_000.0)
    base = _principal()
    same_input = [
        (check_context(), base),
        (check_context(headers={"cookie": "not a policy header"}), base),
        # another token of the same principal (jti, expiry) asks the same question
        (check_context(), Principal("u1", "c1", ("customer",), False, None, "standard", "other",
                                    "iss", time.time() + 999)),
    ]  # fmt: skip
    for check, principal in same_input:
        await evaluate_policy(check, principal, evaluator)
    assert len(engine.calls) == 1
    other_input = [
        (check_context(headers={"user-agent": "ua/2"}), base),
        (check_context(paid_only=True), base),
        (check_context(gateway_type="CP"), base),
        (check_context(), _principal(trial=True, ends=2_000.0)),
        (check_context(), Principal("u2", "c1", ("customer",), False, None, "standard", "j",
                                    "iss", time.time() + 60)),
        (check_context(), Principal("u1", "c1", ("admin",), False, None, "standard", "j",
                                    "iss", time.time() + 60)),
    ]  # fmt: skip
    for check, principal in other_input:
        await evaluate_policy(check, principal, evaluator)
    inputs = [call["request"] | {"principal": call["principal"]} for call in engine.calls]
    assert len(engine.calls) == 1 + len(other_input)
    assert len({repr(sorted(i.items())) for i in inputs}) == len(inputs), "each a new input"
    evaluator.swap(engine, "new-revision")
    await evaluate_policy(check_context(), base, evaluator)
    assert len(engine.calls) == 2 + len(other_input), "a reload asks again"


async def test_cached_allow_never_outlives_the_trial() -> None:
    engine = FakePolicyEngine()
    now = [1_000.0]
    evaluator = _evaluator(engine, cache_seconds=60, clock=lambda: now[0])
    principal = _principal(trial=True, ends=1_001.0)
    await evaluate_policy(check_context(), principal, evaluator)
    now[0] = 1_001.5
    await evaluate_policy(check_context(), principal, evaluator)
    assert len(engine.calls) == 2


async def test_embedded_engine_decides_with_the_repository_policies() -> None:
    engine = RegopyEngine(POLICY_DIR)
    try:
        evaluator = _evaluator(engine)
        now = time.time()
        allowed = await evaluate_policy(check_context(), _principal(), evaluator)
        expired = await evaluate_policy(check_context(), _principal(True, now - 5), evaluator)
        paid = await evaluate_policy(
            check_context(paid_only=True), _principal(True, now + 600), evaluator
        )
        missing = await engine.evaluate("gateway/nothing_here", {"principal": {}})
    finally:
        await engine.close()
    assert isinstance(allowed, PolicyDecision)
    assert isinstance(expired, Denial)
    assert expired.code is ErrorCode.TRIAL_EXPIRED
    assert isinstance(paid, Denial)
    assert paid.code is ErrorCode.PAID_ONLY
    assert missing is None


async def test_embedded_engine_compiles_the_routes_policies_before_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = RegopyEngine(POLICY_DIR, ["/gateway/authz"])

    def no_build(*_: object) -> None:
        raise AssertionError("a policy was compiled on the request path")

    monkeypatch.setattr(engine._interpreter, "build", no_build)
    try:
        result = await engine.evaluate("gateway/authz", _principal_input())
    finally:
        await engine.close()
    assert result is not None
    assert result["allow"] is True


def _principal_input() -> dict[str, object]:
    principal = {
        "user_id": "u",
        "customer_id": "c",
        "roles": ["customer"],
        "plan": "pro",
        "trial_mode": False,
        "trial_ends_at": None,
    }
    request = {
        "method": "GET",
        "path": "/api/v1/orders",
        "route_id": "orders-list",
        "gateway_type": "PLANT",
        "paid_only": False,
        "headers": {},
    }
    return {"principal": principal, "request": request, "time": {"now_ns": 0, "now": ""}}


def test_embedded_engine_names_a_broken_policy(tmp_path: object) -> None:
    from pathlib import Path  # noqa: PLC0415

    directory = Path(str(tmp_path))
    (directory / "bad.rego").write_text("package bad\nallow if { input.x ==\n")
    with pytest.raises(PolicyLoadError, match=r"bad\.rego"):
        RegopyEngine(directory)
    empty = directory / "empty"
    empty.mkdir()
    with pytest.raises(PolicyLoadError, match=r"no \.rego"):
        RegopyEngine(empty)
