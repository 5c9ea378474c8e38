"""The runtime config render.py writes and the authz service reads (build/authz/runtime.json)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Headers the authz service sets for the upstream. Envoy strips client-supplied copies of
# every one of them before ext_authz runs, so none can be spoofed.
IDENTITY_HEADERS: tuple[str, ...] = (
    "x-user-id",
    "x-customer-id",
    "x-roles",
    "x-trial-mode",
    "x-plan",
    "x-correlation-id",
    "x-budget-remaining",
    "x-authz-decision-id",
)

# The client's address as the hop vouches for it: set by Envoy (the Lua filter, from the
# connection or, behind a trusted hop, from x-forwarded-for) on every listener, replacing any
# client copy; the audit row's client_ip, the same Envoy's access log records.
CLIENT_IP_HEADER = "x-client-ip"

# Request headers the service reads from every CheckRequest (check_context.py, the authenticate
# stage, the audit row). Envoy's ext_authz filter sends these plus the policy headers and
# nothing else (`allowed_headers`): a client's big request costs Envoy and Python no more.
CHECK_REQUEST_HEADERS: tuple[str, ...] = (
    "authorization",
    "x-request-id",
    "x-correlation-id",
    "x-causation-id",
    CLIENT_IP_HEADER,
    "user-agent",
)

# Context-extension keys Envoy sends with every check (see docs/ARCHITECTURE.md).
CTX_GATEWAY_TYPE = "gateway_type"
CTX_ROUTE_ID = "route_id"
CTX_PERMISSION = "permission"
CTX_POLICY = "policy"
CTX_PAID_ONLY = "paid_only"
CTX_BUDGET_METRIC = "budget_metric"
CTX_BUDGET_COST = "budget_cost"
CTX_CONFIG_REVISION = "config_revision"
# Comma-separated stages the route runs in shadow mode (evaluate and record, never deny).
CTX_SHADOW = "shadow"

# --- the HTTP ext_authz transport (Envoy `http_service`): how the same facts travel ---
# Envoy sends every check to the service under this prefix (`http_service.path_prefix`), so
# a check of any path can never be mistaken for the service's own endpoints (/health).
HTTP_CHECK_PATH_PREFIX = "/check"
# The route's context extensions, urlencoded into one string of the route's metadata
# (`metadata.filter_metadata[ROUTE_FACTS_NAMESPACE][ROUTE_FACTS_KEY]`) and sent by Envoy as
# this header through a `%METADATA(ROUTE:...)%` formatter in `headers_to_add`, which
# overrides any client value of the same name: the service never re-matches routes.
ROUTE_FACTS_NAMESPACE = "gateway.authz"
ROUTE_FACTS_KEY = "facts"
ROUTE_FACTS_HEADER = "x-authz-route"
# The downstream peer Envoy saw (the gRPC CheckRequest's source address).
PEER_HEADER = "x-authz-peer"
# The service's decision (allow|deny), put into Envoy's dynamic metadata for the access log.
DECISION_HEADER = "x-authz-decision"
# Envoy's http_service takes any 5xx answer for the service failing and drops its body (the
# client would get Envoy's own `authz_unavailable`, not the denial's problem). So a denial
# whose status is 503 goes to Envoy with this status (unassigned in HTTP), and render's first
# local-reply mapper turns exactly these authz denials back into a 503 keeping the body.
HTTP_UNAVAILABLE_STATUS = 460
# The headers Envoy adds to every HTTP check itself (never copied from the client).
HTTP_CHECK_ADDED_HEADERS: tuple[str, ...] = (ROUTE_FACTS_HEADER, PEER_HEADER)
# The headers of a denial Envoy passes to the client (the problem's own, and the id to quote).
DENIAL_CLIENT_HEADERS: tuple[str, ...] = (
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "x-correlation-id",
)


def encode_route_facts(facts: Mapping[str, str]) -> str:
    """The route-metadata string of a route's context extensions (keys in a fixed order)."""
    return urlencode(sorted(facts.items()))


def decode_route_facts(text: str) -> dict[str, str]:
    """The context extensions of a ROUTE_FACTS_HEADER value; ValueError when malformed.

    The encoding never holds a comma: a value with one is two headers joined (ambiguous).
    """
    if "," in text:
        raise ValueError("route facts sent more than once")
    return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))


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
