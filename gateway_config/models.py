"""Pydantic models of config/gateway.yaml: entry points, upstreams, authz, routes, RBAC, budgets."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from authz_service.runtime_config import (
    CHECK_REQUEST_HEADERS,
    Budgets,
    GatewayType,
    ShadowStage,
)

Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Permission = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*$")]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Admin(_Strict):
    """Envoy's admin interface; loopback only, because it can reconfigure and stop Envoy."""

    address: Literal["127.0.0.1", "::1"] = "127.0.0.1"
    port: Port


class EntryPoint(_Strict):
    gateway_type: GatewayType
    address: str = "127.0.0.1"
    port: Port
    # how other hops reach it (compose: the service name); default: its address
    host: str | None = None
    admin: Admin
    # Another entry point to forward every route to (CP/PP -> PLANT); unset: the route's upstream.
    via: Name | None = None
    readiness_path: str = Field(default="/ready", pattern=r"^/[A-Za-z0-9/_.-]*$")


class HealthCheck(_Strict):
    path: str = Field(default="/health", pattern=r"^/")
    interval_ms: int = Field(default=2000, ge=100)
    timeout_ms: int = Field(default=1000, ge=10)
    unhealthy_threshold: int = Field(default=2, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)


class Upstream(_Strict):
    host: str = Field(min_length=1)
    port: Port
    connect_timeout_ms: int = Field(default=1000, ge=1)
    health_check: HealthCheck | None = Field(default_factory=HealthCheck)


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


def _header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a lowercase header name (Envoy matches them exactly)")
    return name


HeaderName = Annotated[str, AfterValidator(_header_name)]


class Authz(_Strict):
    host: str = Field(min_length=1)
    port: Port
    timeout_ms: int = Field(default=250, ge=1, le=60_000)
    connect_timeout_ms: int = Field(default=500, ge=1)
    # Envoy sends the service only the headers it reads: these must cover AUTHZ_POLICY_HEADERS
    # (same default), or the policy sees them missing. Lowercase, as Envoy matches them.
    policy_headers: tuple[HeaderName, ...] = ("user-agent", "content-type", "x-forwarded-for")

    def check_request_headers(self) -> tuple[str, ...]:
        """What Envoy sends the service: the headers it reads, then the policy's."""
        return tuple(dict.fromkeys(CHECK_REQUEST_HEADERS + self.policy_headers))


class Limits(_Strict):
    max_request_headers_kb: int = Field(default=60, ge=1, le=8192)
    max_request_bytes: int = Field(default=1_048_576, ge=1)
    request_timeout_ms: int = Field(default=15_000, ge=1)
    drain_time_s: int = Field(default=10, ge=0)


class Match(_Strict):
    prefix: str | None = Field(default=None, pattern=r"^/")
    path: str | None = Field(default=None, pattern=r"^/")
    regex: str | None = None
    methods: tuple[HttpMethod, ...] = ()

    @model_validator(mode="after")
    def _exactly_one_path_rule(self) -> Match:
        given = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prefix, path, regex")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from exc
        return value


class RouteBudget(_Strict):
    metric: Name
    units: int = Field(default=1, ge=1)


StageMode = Literal["enforce", "shadow"]
# The order stages run in, and so the order of every rendered shadow list.
SHADOW_STAGES: tuple[ShadowStage, ...] = ("authenticate", "authorize", "policy", "budget")


class ShadowModes(_Strict):
    """Per-stage mode: `shadow` evaluates and records but never denies; unset: inherited."""

    authenticate: StageMode | None = None
    authorize: StageMode | None = None
    policy: StageMode | None = None
    budget: StageMode | None = None

    def stages(self, inherited: tuple[ShadowStage, ...] = ()) -> tuple[ShadowStage, ...]:
        """The stages in shadow mode, each unset stage keeping its mode from `inherited`."""
        return tuple(
            stage
            for stage in SHADOW_STAGES
            if (getattr(self, stage) or ("shadow" if stage in inherited else "enforce")) == "shadow"
        )


class Route(_Strict):
    id: Name
    match: Match
    entry_points: tuple[Name, ...] = Field(min_length=1)
    upstream: Name
    permission: Permission | None = None
    policy: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*$")
    paid_only: bool = False
    budget: RouteBudget | None = None
    timeout_ms: int | None = Field(default=None, ge=1)
    max_request_bytes: int | None = Field(default=None, ge=1)
    public: bool = False
    # Overrides the global `shadow` section stage by stage; unset: the global modes apply.
    shadow: ShadowModes | None = None

    @model_validator(mode="after")
    def _public_or_permission(self) -> Route:
        checked = (self.permission, self.policy, self.budget, self.paid_only, self.shadow)
        if self.public and any(checked):
            raise ValueError(
                "a public route has no permission, policy, budget, paid_only or shadow"
            )
        if not self.public and self.permission is None:
            raise ValueError("a non-public route needs a permission (or public: true)")
        return self


class Audit(_Strict):
    """Where Envoy writes its access logs (one JSON-lines file per entry point) for the shipper.

    A relative directory is resolved against the current directory when rendering: the
    rendered configs always carry an absolute path.
    """

    access_log_dir: str = Field(default="var/access-logs", min_length=1)


Rbac = dict[GatewayType, dict[Name, tuple[str, ...]]]


class GatewayConfig(_Strict):
    entry_points: dict[Name, EntryPoint] = Field(min_length=1)
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    authz: Authz
    limits: Limits = Field(default_factory=Limits)
    permissions: tuple[Permission, ...] = ()
    # gateway type -> role -> permissions ("*" grants all); may be a file name (see loader)
    rbac: Rbac
    budgets: Budgets = Field(default_factory=Budgets)
    routes: tuple[Route, ...] = Field(min_length=1)
    # Stage modes for every route that does not override them; default: every stage enforces.
    shadow: ShadowModes = Field(default_factory=ShadowModes)
    audit: Audit = Field(default_factory=Audit)

    def shadow_stages(self, route: Route) -> tuple[ShadowStage, ...]:
        """The effective shadow stages of a route: its own modes over the global ones."""
        default = self.shadow.stages()
        return default if route.shadow is None else route.shadow.stages(default)
