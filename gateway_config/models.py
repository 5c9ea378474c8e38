"""Pydantic models of config/gateway.yaml: entry points, upstreams, authz, routes, RBAC, budgets."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway_contract.headers import CHECK_REQUEST_HEADERS
from gateway_contract.runtime import Budgets, GatewayType, ShadowStage

Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Permission = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*$")]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# The only methods the gateway routes; any other (CONNECT, TRACE, extensions) gets a 501.
HTTP_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Admin(_Strict):
    """Envoy's admin interface; loopback only, because it can reconfigure and stop Envoy.

    `pipe` puts it on a unix socket instead (address and port are then unused): where the
    shipper runs in another container (compose), a socket in the volume they share is how it
    asks Envoy to reopen its access logs, and the directory's permissions say who may.
    """

    address: Literal["127.0.0.1", "::1"] = "127.0.0.1"
    port: Port
    pipe: str | None = Field(default=None, pattern=r"^/[^\x00]{1,100}$")


class InternalListener(_Strict):
    """The way in for hops only (CP/PP -> PLANT): trusts the hop's x-causation-id.

    Loopback by default; a private network address (compose: 0.0.0.0, not published) when
    the hops run elsewhere. Clients never reach it, so the public listener strips the header.
    """

    address: str = "127.0.0.1"
    port: Port
    # x-forwarded-for entries appended by the proxies in front of it that it trusts: the hop's
    # own Envoy (1), so the audited client is the hop's client, not the hop
    xff_trusted_hops: int = Field(default=1, ge=0, le=8)


class EntryPoint(_Strict):
    gateway_type: GatewayType
    address: str = "127.0.0.1"
    port: Port
    # how other hops reach it (compose: the service name); default: its internal address
    host: str | None = None
    admin: Admin
    # Another entry point to forward every route to (CP/PP -> PLANT); unset: the route's upstream.
    via: Name | None = None
    # Required on an entry point others forward to (a `via` target), refused elsewhere.
    internal: InternalListener | None = None
    readiness_path: str = Field(default="/ready", pattern=r"^/[A-Za-z0-9/_.-]*$")
    # Proxies in front of the public listener that append the client's address to
    # x-forwarded-for and are trusted to (a load balancer, Cloud Run's front end): the client
    # is the address the outermost trusted one appended, which the gateway then vouches for
    # (x-client-ip, x-forwarded-for, the audit). 0: the TCP peer is the client.
    xff_trusted_hops: int = Field(default=0, ge=0, le=8)
    # How the hops that forward to it connect (render --target): the port on `host` (default:
    # `port`; 443 for a Cloud Run URL), HTTPS, and the audience of the Google ID token it needs.
    hop_port: Port | None = None
    hop_tls: bool = False
    hop_id_token_audience: str | None = Field(default=None, pattern=r"^https://")

    @model_validator(mode="after")
    def _id_token_over_tls(self) -> EntryPoint:
        if self.hop_id_token_audience is not None and not self.hop_tls:
            raise ValueError(
                "hop_id_token_audience needs hop_tls: true (a token never goes in clear)"
            )
        return self


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
    # HTTPS to `host` (SNI and certificate name checked), and the audience of the Google ID token
    # Envoy's gcp_authn filter adds (a Cloud Run service that only its invokers may call).
    tls: bool = False
    id_token_audience: str | None = Field(default=None, pattern=r"^https://")
    # The client's bearer token stops at the gateway: the upstream gets the identity headers,
    # and a token in its logs could be replayed against the gateway until it expires. true:
    # the upstream verifies the token itself or calls on with it.
    forward_authorization: bool = False
    # The upstream gets Host `host:port`, not whatever Host (or absolute-URI authority) a
    # client sent: links, redirects and cache keys it builds from Host stay its own. true:
    # the upstream serves several virtual hosts by the client's Host (and must check it).
    preserve_host: bool = False

    @model_validator(mode="after")
    def _id_token_over_tls(self) -> Upstream:
        if self.id_token_audience is not None and not self.tls:
            raise ValueError("id_token_audience needs tls: true (a token never goes in clear)")
        return self


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


def _header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a lowercase header name (Envoy matches them exactly)")
    return name


HeaderName = Annotated[str, AfterValidator(_header_name)]


class Authz(_Strict):
    host: str = Field(min_length=1)
    port: Port
    # grpc: Envoy's ext_authz `grpc_service` (Check over HTTP/2); http: `http_service`, the
    # service's HTTP/1.1 transport (AUTHZ_HTTP_ADDRESS), route facts sent as one header
    transport: Literal["grpc", "http"] = "grpc"
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
    # the request target (path and query) in bytes; longer ones get a 414 problem before any
    # check, so a backend's own limit (aiohttp: 8190) never answers in its own format
    max_path_bytes: int = Field(default=4096, ge=64, le=65_536)
    max_request_bytes: int = Field(default=1_048_576, ge=1)
    request_timeout_ms: int = Field(default=15_000, ge=1)
    # from the first byte of a request to its last (headers and body), else a 408 problem
    request_headers_timeout_ms: int = Field(default=10_000, ge=1)
    request_receive_timeout_ms: int = Field(default=60_000, ge=1)
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
    # Envoy writes its buffered access-log lines this often (its --file-flush-interval-msec;
    # Envoy's own default is 10 s): at most this much of Envoy's lines is lost when it dies
    file_flush_interval_ms: int = Field(default=250, ge=10, le=60_000)


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
    # CA bundle (a path where Envoy runs) that verifies the certificates of TLS hops.
    tls_ca_file: str = Field(default="/etc/ssl/certs/ca-certificates.crt", pattern=r"^/")
    audit: Audit = Field(default_factory=Audit)

    def shadow_stages(self, route: Route) -> tuple[ShadowStage, ...]:
        """The effective shadow stages of a route: its own modes over the global ones."""
        default = self.shadow.stages()
        return default if route.shadow is None else route.shadow.stages(default)
