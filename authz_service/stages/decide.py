"""Stage 5: turn an allowed check into identity headers and a decision id for Envoy's logs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from authz_service.check_context import CheckContext
from authz_service.principal import Principal
from authz_service.stages.budget import BudgetResult
from gateway_contract.headers import CORRELATION_HEADER

_ID_BYTES = 16  # 128 random bits, as uuid4 has
_POOL_BYTES = 256 * _ID_BYTES  # one getrandom() system call per 256 decision ids


class RandomIds:
    """Random hex ids read from the kernel's CSPRNG a pool at a time, not a system call each."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool, self._at = b"", 0

    def forget(self) -> None:
        """Drop what was drawn: a forked child must never hand out its parent's next ids."""
        self._pool, self._at = b"", 0

    def next_hex(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_POOL_BYTES), 0
        self._at = at + _ID_BYTES
        return self._pool[at : at + _ID_BYTES].hex()


_decision_ids = RandomIds()
os.register_at_fork(after_in_child=_decision_ids.forget)


@dataclass(frozen=True, slots=True)
class Allowance:
    decision_id: str
    headers: tuple[tuple[str, str], ...]
    metadata: dict[str, str]


async def decide(
    check: CheckContext,
    principal: Principal | None,
    budget: BudgetResult | None,
) -> Allowance:
    """`principal` is None only when authentication runs in shadow mode and found nobody."""
    decision_id = _decision_ids.next_hex()
    headers: list[tuple[str, str]] = [("x-authz-decision-id", decision_id)]
    if principal is not None:
        headers += [
            ("x-user-id", principal.user_id),
            ("x-roles", ",".join(principal.roles)),
            ("x-trial-mode", "true" if principal.trial_mode else "false"),
            ("x-plan", principal.plan),
        ]
        if principal.customer_id is not None:
            headers.append(("x-customer-id", principal.customer_id))
    if check.correlation_id is not None:
        headers.append((CORRELATION_HEADER, check.correlation_id))
    if budget is not None and budget.remaining is not None:
        headers.append(("x-budget-remaining", str(budget.remaining)))
    # Envoy's access log can join on the decision id; the rest of the decision is in the
    # audit row (kept small: building this Struct is paid on every allowed request)
    metadata = {"decision": "allow", "decision_id": decision_id}
    return Allowance(decision_id, tuple(headers), metadata)
