"""The runtime config render writes and the authz service reads (build/authz/runtime.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class GatewayType(StrEnum):
    PLANT = "PLANT"
    CP = "CP"
    PP = "PP"


Window = Literal["day", "month"]
# The stages an operator can put in shadow mode; `decide` always enforces.
ShadowStage = Literal["authenticate", "authorize", "policy", "budget"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathMatch(_Strict):
    prefix: str | None = None
    exact: str | None = None
    regex: str | None = None


class BudgetCost(_Strict):
    metric: str
    cost: int = Field(ge=1)


class RouteRule(_Strict):
    gateway_types: tuple[GatewayType, ...]
    methods: tuple[str, ...] = ()
    path: PathMatch
    permission: str | None = None
    policy: str | None = None
    paid_only: bool = False
    budget: BudgetCost | None = None
    public: bool = False
    # Stages evaluated and recorded but not enforced on this route; None: the global
    # default (RuntimeConfig.shadow) applies, () enforces every stage here.
    shadow: tuple[ShadowStage, ...] | None = None


SubjectKind = Literal["customer", "user"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("customer", "user")


@dataclass(frozen=True, slots=True)
class BudgetSubject:
    """Who a budget belongs to: a customer, or a user who has none.

    The kind is part of every counter key and override lookup, so a user whose `sub` equals a
    customer id never spends that customer's budget nor gets its override.
    """

    kind: SubjectKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> BudgetSubject:
        """`customer:<id>` or `user:<id>` (the admin API's form); ValueError otherwise."""
        kind, _, ident = text.partition(":")
        for known in SUBJECT_KINDS:
            if kind == known and ident:
                return cls(known, ident)
        raise ValueError(f"subject {text[:64]!r} is not customer:<id> or user:<id>")


# metric -> window -> limit
MetricLimits = dict[str, dict[Window, int]]


class BudgetOverrides(_Strict):
    """Limits that replace the plan's for one subject, grouped by the subject's kind."""

    customers: dict[str, MetricLimits] = Field(default_factory=dict)
    users: dict[str, MetricLimits] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _grouped_by_kind(cls, value: Any) -> Any:
        if isinstance(value, dict):
            flat = [key for key in value if key not in ("customers", "users")]
            if flat:
                raise ValueError(
                    f"overrides are grouped by subject kind, `customers:` or `users:` "
                    f"(found {str(flat[0])[:64]!r}; a customer id and a user id may be equal)"
                )
        return value

    def of(self, subject: BudgetSubject) -> MetricLimits:
        table = self.customers if subject.kind == "customer" else self.users
        return table.get(subject.id, {})


class Budgets(_Strict):
    # plan -> metric -> window -> limit
    plans: dict[str, MetricLimits] = Field(default_factory=dict)
    # customer or user id -> metric -> window -> limit; replaces the plan's limit
    overrides: BudgetOverrides = Field(default_factory=BudgetOverrides)

    def limit(self, plan: str, subject: BudgetSubject, metric: str, window: Window) -> int | None:
        """The limit for a subject on a plan, or None when the metric is not limited."""
        override = self.overrides.of(subject).get(metric, {}).get(window)
        if override is not None:
            return override
        return self.plans.get(plan, {}).get(metric, {}).get(window)


class RuntimeConfig(_Strict):
    revision: str
    # gateway type -> role -> permissions ("*" grants every permission)
    rbac: dict[GatewayType, dict[str, frozenset[str]]]
    routes: dict[str, RouteRule]
    budgets: Budgets = Field(default_factory=Budgets)
    # Stages in shadow mode on every route unless the route sets its own list.
    shadow: tuple[ShadowStage, ...] = ()
    # The headers Envoy sends in a CheckRequest (None: every header, as without a filter list).
    sent_headers: tuple[str, ...] | None = None
    # The largest HTTP check head Envoy can send (http_check.max_check_head_bytes of its header
    # limit; None: not rendered). The HTTP transport must take every such check.
    max_check_head_bytes: int | None = Field(default=None, ge=1)

    def policy_paths(self) -> tuple[str, ...]:
        """The policy paths the routes ask for (compiled ahead by the embedded engine)."""
        return tuple(sorted({r.policy.strip("/") for r in self.routes.values() if r.policy}))

    def unsent_headers(self, wanted: tuple[str, ...]) -> list[str]:
        """Those of `wanted` that Envoy never sends: a policy would always see them missing."""
        if self.sent_headers is None:
            return []
        return [name for name in wanted if name.lower() not in self.sent_headers]

    def permissions_of(self, gateway_type: GatewayType, roles: tuple[str, ...]) -> frozenset[str]:
        table = self.rbac.get(gateway_type, {})
        granted: set[str] = set()
        for role in roles:
            granted |= table.get(role, frozenset())
        return frozenset(granted)

    def shadow_stages(self, route_id: str) -> tuple[ShadowStage, ...]:
        """The stages in shadow mode on a route (its own list, else the global default)."""
        route = self.routes.get(route_id)
        if route is None or route.shadow is None:
            return self.shadow
        return route.shadow


class RuntimeConfigError(ValueError):
    """The runtime config file is missing or invalid; the message names the file and key."""


def check_policy_headers(path: Path, config: RuntimeConfig, wanted: tuple[str, ...]) -> None:
    """Refuse a config whose Envoy would never send a header the policy input is built from."""
    unsent = config.unsent_headers(wanted)
    if unsent:
        raise RuntimeConfigError(
            f"{path}: sent_headers: Envoy does not send {', '.join(unsent)}, which "
            "AUTHZ_POLICY_HEADERS passes to the policy: add them to authz.policy_headers in the "
            "gateway config and render again"
        )


def check_http_head_limit(path: Path, config: RuntimeConfig, max_head_bytes: int) -> None:
    """Refuse a config whose Envoy can send HTTP checks larger than the service takes: a
    request Envoy and the gRPC transport accept would get the transport's own 431, with no
    decision in its audit row."""
    bound = config.max_check_head_bytes
    if bound is not None and bound > max_head_bytes:
        raise RuntimeConfigError(
            f"{path}: max_check_head_bytes: Envoy can send checks of {bound} bytes of head, "
            f"more than AUTHZ_HTTP_MAX_HEAD_BYTES ({max_head_bytes}): raise it to at least "
            f"{bound}, or lower limits.max_request_headers_kb in the gateway config"
        )


def load_runtime_config(path: Path) -> RuntimeConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RuntimeConfigError(f"{path}: not found (run `make render`)") from exc
    except json.JSONDecodeError as exc:
        raise RuntimeConfigError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from exc
    try:
        return RuntimeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RuntimeConfigError(f"{path}: {where}: {first['msg']}") from exc
