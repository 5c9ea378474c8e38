"""The seams of the service as Protocols: key source, policy engine, budget store, audit journal.

Adapters for the real services implement them; unit tests use small fakes at these seams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jwt import PyJWK

from authz_service.check_context import CheckContext
from authz_service.principal import Principal
from gateway_contract.runtime import BudgetSubject, Window


class AuditJournal(Protocol):
    def record(self, row: dict[str, Any], *, refusal: bool = False) -> Awaitable[None] | None:
        """Chain and buffer one check's row; the awaitable completes once it is on disk.

        None: a refusal past the journal's hard limit, counted but not written. Raises
        JournalUnavailableError when nothing can be written (the check must not be answered).
        """
        ...

    @property
    def accepting(self) -> bool:
        """False when the journal is over its size bound or broken: checks are refused (503)."""
        ...


class Verifier(Protocol):
    async def verify(self, token: str) -> Principal:
        """The principal of a valid bearer token; raises TokenRejectedError otherwise."""
        ...


class KeyUnknownError(LookupError):
    """No verification key for this `kid` (after any allowed refresh)."""


class KeySource(Protocol):
    async def key_for(self, kid: str | None) -> PyJWK:
        """The verification key for a token's `kid`.

        Raises KeyUnknownError when there is none, DependencyUnavailableError when the
        key set cannot be fetched.
        """
        ...

    async def close(self) -> None:
        """Release any connection the source holds."""
        ...


class PolicyEngine(Protocol):
    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The document at data.<path> for this input, None when undefined.

        Raises DependencyUnavailableError when the engine cannot answer in time.
        """
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class PolicyLoadError(ValueError):
    """The policy directory has no policies or one does not compile; the message names the file."""


# Compiles a policy directory for the routes' policy paths (the embedded engine); raises
# PolicyLoadError. Reload uses one to validate, and with the embedded engine to swap.
PolicyEngineFactory = Callable[[Path, tuple[str, ...]], PolicyEngine]


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    path: str
    allow: bool
    reason: str
    cached: bool

    def audit(self) -> dict[str, Any]:
        return {self.path: {"allow": self.allow, "reason": self.reason, "cached": self.cached}}


class PolicyDecider(Protocol):
    """The policy stage's seam: an engine behind a decision cache (adapters/policy_evaluator.py).

    Reload swaps its engine; Explain shows the input it builds.
    """

    engine: PolicyEngine
    revision: str  # of the policies the engine runs
    headers: tuple[str, ...]  # request headers copied into the policy input

    def swap(self, engine: PolicyEngine, revision: str) -> PolicyEngine:
        """Use a new engine and revision from the next evaluation on; returns the old engine."""
        ...

    def build_input(self, check: CheckContext, principal: Principal) -> dict[str, Any]:
        """The policy input document of a check, without the time."""
        ...

    async def decide(self, path: str, check: CheckContext, principal: Principal) -> PolicyDecision:
        """The engine's decision at data.<path> (cached); raises DependencyUnavailableError."""
        ...


@dataclass(frozen=True, slots=True)
class BudgetWindow:
    """One counter to check and consume: its key, its limit and when it resets."""

    key: str
    limit: int
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class BudgetConsumption:
    """Usage after the attempt: consumed everywhere, or refused by the first exceeded window."""

    allowed: bool
    used: tuple[int, ...]  # per window: usage after consuming, or current usage when refused
    exceeded_index: int | None = None


def consumption_if(
    windows: Sequence[BudgetWindow], used: Sequence[int], cost: int
) -> BudgetConsumption:
    """The answer `consume` gives for current usage `used`, computed without writing."""
    for index, window in enumerate(windows):
        if used[index] + cost > window.limit:
            return BudgetConsumption(allowed=False, used=tuple(used), exceeded_index=index)
    return BudgetConsumption(allowed=True, used=tuple(u + cost for u in used))


class BudgetStore(Protocol):
    def counter_key(self, subject: BudgetSubject, metric: str, window: Window, period: str) -> str:
        """The name of the counter of a subject's metric in one window period (the store's
        key schema: distinct subjects never share a counter)."""
        ...

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        """Atomically: if every window has room for `cost`, consume it in all of them.

        Raises DependencyUnavailableError when the store cannot answer in time.
        """
        ...

    async def peek(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        """What `consume` would answer now, without consuming anything (Explain, Budget)."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BudgetReservation:
    """A block reserved in every window (`block` > 0), or the refusal of the first full one."""

    block: int  # 0 when refused
    used: tuple[int, ...]  # per window: usage before the reservation (after any give-back)
    exceeded_index: int | None = None


class LeasableBudgetStore(BudgetStore, Protocol):
    async def reserve(
        self, windows: Sequence[BudgetWindow], cost: int, *, most: int, divisor: int, give_back: int
    ) -> BudgetReservation:
        """Atomically: give back `give_back` unused units of the caller's previous block of these
        windows (never below zero), then, if every window has room for `cost`, reserve
        max(cost, min(most, room // divisor)) units, never more than the room, in all of them.

        Raises DependencyUnavailableError when the store cannot answer in time.
        """
        ...

    async def release(self, blocks: Sequence[tuple[Sequence[str], int]]) -> None:
        """Give back unused units: (counter keys of one block, units), never below zero."""
        ...
