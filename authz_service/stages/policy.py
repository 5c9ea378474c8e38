"""Stage 3: ask the policy engine (OPA or embedded regopy) about the principal and the request."""

from __future__ import annotations

from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.ports import PolicyDecider, PolicyDecision
from authz_service.principal import Principal

_REASON_CODES = {"trial_expired": ErrorCode.TRIAL_EXPIRED, "paid_only": ErrorCode.PAID_ONLY}
_REASON_DETAILS = {
    "trial_expired": "the trial period has ended",
    "paid_only": "this route needs a paid plan; trial accounts cannot use it",
}


async def evaluate_policy(
    check: CheckContext, principal: Principal, evaluator: PolicyDecider
) -> PolicyDecision | Denial | None:
    """None when the route has no policy; the decision when allowed; a 403 denial otherwise."""
    path = check.route.policy_path
    if not path:
        return None
    decision = await evaluator.decide(path, check, principal)
    if decision.allow:
        return decision
    code = _REASON_CODES.get(decision.reason, ErrorCode.POLICY_DENIED)
    detail = _REASON_DETAILS.get(decision.reason, f"denied by policy ({decision.reason[:64]})")
    return Denial(code, Stage.POLICY, detail, extensions={"reason": decision.reason})
