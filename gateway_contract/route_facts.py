"""What a route tells the authz service on every check, and the encodings it travels in.

The facts are defined once, here, as `RouteFacts`. Render computes them per entry point and
route (`facts_of_route`) and writes one of their two renderings into Envoy's route:

- gRPC transport: `to_context_extensions()`, the check's `context_extensions` (strings);
- HTTP transport: `to_route_metadata()`, one string in the route's metadata
  (`ROUTE_FACTS_NAMESPACE`/`ROUTE_FACTS_KEY`) that Envoy sends as `headers.ROUTE_FACTS_HEADER`
  through the `route_facts_formatter()` of `headers_to_add`, overriding any client copy.

The service reads them back with `from_context_extensions` / `from_route_metadata` and never
re-matches routes. Reading is lenient on purpose: a missing or malformed fact reaches the
stage that needs it, which refuses the check as `route_misconfigured` (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from gateway_contract.runtime import GatewayType, RuntimeConfig

# The fact names: the context-extension keys, and the keys of the route-metadata encoding.
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
FACT_NAMES: tuple[str, ...] = (
    CTX_GATEWAY_TYPE,
    CTX_ROUTE_ID,
    CTX_PERMISSION,
    CTX_POLICY,
    CTX_PAID_ONLY,
    CTX_BUDGET_METRIC,
    CTX_BUDGET_COST,
    CTX_CONFIG_REVISION,
    CTX_SHADOW,
)

# The HTTP transport: where the facts sit in the route's metadata; Envoy's formatter copies
# them into headers.ROUTE_FACTS_HEADER (a client's header of that name is overridden).
ROUTE_FACTS_NAMESPACE = "gateway.authz"
ROUTE_FACTS_KEY = "facts"


def route_facts_formatter() -> str:
    """The `headers_to_add` value that sends a route's metadata-encoded facts."""
    return f"%METADATA(ROUTE:{ROUTE_FACTS_NAMESPACE}:{ROUTE_FACTS_KEY})%"


def _shadow_list(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _cost(text: str | None) -> int:
    """The units a check costs: 1 when unsaid, 0 (refused by the budget stage) when invalid."""
    try:
        return int(text or "1")
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """The facts of the route Envoy matched, as the rendered config sends them."""

    gateway_type: str = ""
    route_id: str = ""
    permission: str = ""
    policy: str = ""
    paid_only: bool = False
    budget_metric: str = ""  # empty: the check consumes no budget
    budget_cost: int = 0
    config_revision: str = ""
    # the stages in shadow mode on this route; None: not sent (the runtime config decides)
    shadow: tuple[str, ...] | None = None

    @property
    def policy_path(self) -> str:
        """The OPA data path to query (empty: no policy stage)."""
        return self.policy.strip("/")

    def to_context_extensions(self) -> dict[str, str]:
        """The gRPC rendering: every fact as a string, in FACT_NAMES order."""
        return {
            CTX_GATEWAY_TYPE: self.gateway_type,
            CTX_ROUTE_ID: self.route_id,
            CTX_PERMISSION: self.permission,
            CTX_POLICY: self.policy,
            CTX_PAID_ONLY: "true" if self.paid_only else "false",
            CTX_BUDGET_METRIC: self.budget_metric,
            CTX_BUDGET_COST: str(self.budget_cost),
            CTX_CONFIG_REVISION: self.config_revision,
            CTX_SHADOW: ",".join(self.shadow or ()),
        }

    @classmethod
    def from_context_extensions(cls, context: Mapping[str, str]) -> RouteFacts:
        """The facts of a check's context extensions; unknown keys are ignored."""
        return cls(
            gateway_type=context.get(CTX_GATEWAY_TYPE, ""),
            route_id=context.get(CTX_ROUTE_ID, ""),
            permission=context.get(CTX_PERMISSION, ""),
            policy=context.get(CTX_POLICY, ""),
            paid_only=context.get(CTX_PAID_ONLY, "false").lower() == "true",
            budget_metric=context.get(CTX_BUDGET_METRIC, ""),
            budget_cost=_cost(context.get(CTX_BUDGET_COST)),
            config_revision=context.get(CTX_CONFIG_REVISION, ""),
            shadow=_shadow_list(context.get(CTX_SHADOW)),
        )

    def to_route_metadata(self) -> str:
        """The HTTP rendering: the context extensions urlencoded into one string (sorted keys).

        The encoding never holds a comma, so a header holding one was sent twice.
        """
        return urlencode(sorted(self.to_context_extensions().items()))

    @classmethod
    def from_route_metadata(cls, text: str) -> RouteFacts:
        """The facts of a ROUTE_FACTS_HEADER value; ValueError when it is malformed."""
        if "," in text:
            raise ValueError("route facts sent more than once")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        return cls.from_context_extensions(dict(pairs))


def facts_of_route(
    config: RuntimeConfig, route_id: str, gateway_type: GatewayType, *, charges_budget: bool
) -> RouteFacts:
    """The facts of a (non-public) route of the runtime config, on a gateway type.

    `charges_budget`: a budget is charged once per request, by the hop that reaches the
    upstream (PLANT); a hop that forwards to another entry point (CP, PP) sends none.
    """
    rule = config.routes[route_id]
    budget = rule.budget if charges_budget else None
    return RouteFacts(
        gateway_type=gateway_type.value,
        route_id=route_id,
        permission=rule.permission or "",
        policy=rule.policy or "",
        paid_only=rule.paid_only,
        budget_metric=budget.metric if budget else "",
        budget_cost=budget.cost if budget else 0,
        config_revision=config.revision,
        shadow=config.shadow_stages(route_id),
    )
