"""The service's one flat Settings, read once from AUTHZ_* environment variables at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ENV_PREFIX = "AUTHZ_"

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class IssuerConfig(BaseModel):
    """One trusted issuer: its audiences, its explicit algorithms and exactly one key source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="Exact `iss` claim value.")
    audiences: tuple[str, ...] = Field(min_length=1, description="Accepted `aud` values.")
    algorithms: tuple[str, ...] = Field(min_length=1, description="Allowed `alg` header values.")
    jwks_url: str | None = Field(None, description="JWKS endpoint, fetched and cached.")
    public_key_pem: str | None = Field(None, description="A static PEM public key.")
    jwks: dict[str, Any] | None = Field(None, description="An inline JWK set {'keys': [...]}.")
    hs256_secret: SecretStr | None = Field(None, description="Shared secret (development only).")

    @model_validator(mode="after")
    def _one_key_source_and_matching_algorithms(self) -> IssuerConfig:
        sources = [self.jwks_url, self.public_key_pem, self.jwks, self.hs256_secret]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                f"issuer {self.issuer!r}: set exactly one of jwks_url, public_key_pem, jwks, "
                "hs256_secret"
            )
        algorithms = set(self.algorithms)
        unknown = algorithms - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"issuer {self.issuer!r}: algorithms not allowed: {sorted(unknown)}")
        # A key is either a shared secret or a public key; mixing families is how HS/RS
        # confusion happens, so each issuer is one or the other.
        allowed = HMAC_ALGORITHMS if self.hs256_secret is not None else ASYMMETRIC_ALGORITHMS
        if not algorithms <= allowed:
            kind = "hs256_secret" if self.hs256_secret is not None else "a public key source"
            raise ValueError(
                f"issuer {self.issuer!r}: algorithms {sorted(algorithms - allowed)} "
                f"do not fit {kind}"
            )
        if self.hs256_secret is not None and len(self.hs256_secret.get_secret_value()) < 32:
            raise ValueError(f"issuer {self.issuer!r}: hs256_secret needs at least 32 characters")
        return self


class Settings(BaseSettings):
    """Every setting of the authz service; each maps to the environment variable AUTHZ_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    grpc_address: str = Field(
        "127.0.0.1:9001", description="host:port of the gRPC ext_authz server (empty: off)."
    )
    http_address: str = Field(
        "",
        description="host:port of the HTTP ext_authz server (Envoy `http_service`; empty: off).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes; above 1 a supervisor starts them, they share the "
        "HTTP and gRPC ports (SO_REUSEPORT), a dead one is restarted (docs/ARCHITECTURE.md).",
    )
    worker_index: int | None = Field(
        None, ge=0, description="Set by the supervisor for each worker (not by operators)."
    )
    worker_heartbeat_fd: int | None = Field(
        None, ge=0, description="Set by the supervisor: where a worker's event loop beats."
    )
    worker_hang_seconds: float = Field(
        10.0,
        ge=0,
        description="A worker whose event loop has not beaten for this long (hung: blocked, "
        "stopped) is killed and restarted; it still holds its share of the port (0: never).",
    )
    http_max_headers: int = Field(64, ge=8, description="Header fields one HTTP check may have.")
    http_max_head_bytes: int = Field(
        64 * 1024,
        ge=4096,
        description="Bytes of one HTTP check's request line and headers (at least what Envoy "
        "can send: runtime.json's max_check_head_bytes, else the service refuses to start).",
    )
    http_max_pipelined: int = Field(
        32, ge=1, description="HTTP checks in flight per connection (reading pauses beyond)."
    )
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, description="An HTTP request head not complete by then: 408, closed."
    )
    http_idle_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="An idle HTTP connection is closed after this (keep it above Envoy's "
        "cluster idle timeout, which render sets to 60 s).",
    )
    runtime_config: Path = Field(
        Path("build/authz/runtime.json"), description="runtime.json written by render.py."
    )
    jwt_issuers: tuple[IssuerConfig, ...] = Field(
        min_length=1, description="JSON list of trusted issuers (see IssuerConfig)."
    )
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew for exp/nbf/iat.")
    jwt_max_lifetime_seconds: float = Field(
        86_400.0, ge=0, description="Tokens expiring further ahead are refused (0: no bound)."
    )
    max_token_bytes: int = Field(8192, ge=256, description="Longer bearer tokens are refused.")
    token_cache_size: int = Field(10_000, ge=0, description="Verified tokens kept (0 disables).")
    jwks_timeout_seconds: float = Field(2.0, gt=0, description="Timeout of one JWKS fetch.")
    jwks_cache_seconds: float = Field(300.0, gt=0, description="JWKS refreshed after this age.")
    jwks_min_refresh_seconds: float = Field(
        30.0, ge=0, description="At most one JWKS refresh per issuer in this interval."
    )
    jwks_retain_seconds: float = Field(
        3600.0, ge=0, description="Keys gone from the JWKS stay valid this long (rotation)."
    )
    policy_dir: Path = Field(Path("policies"), description="Rego policies for the embedded engine.")
    opa_url: str = Field("", description="OPA base URL; empty evaluates policies with regopy.")
    opa_timeout_seconds: float = Field(
        0.5, gt=0, description="Timeout of one OPA server query (regopy runs inline, ~0.15 ms)."
    )
    opa_pool_size: int = Field(32, ge=1, description="Keep-alive connections to OPA.")
    policy_cache_seconds: float = Field(2.0, ge=0, description="Policy decisions cached (0: off).")
    policy_cache_size: int = Field(10_000, ge=0, description="Policy decisions kept.")
    policy_headers: tuple[str, ...] = Field(
        ("user-agent", "content-type", "x-forwarded-for"),
        description="Request headers passed to the policy input.",
    )
    policy_fail_open: bool = Field(False, description="Allow when OPA is down (default: 503).")
    redis_url: str = Field("", description="Redis URL; empty uses an in-process ledger (dev only).")
    redis_timeout_seconds: float = Field(0.25, gt=0, description="Timeout of one budget call.")
    budget_fail_open: bool = Field(False, description="Allow when Redis is down (default: 503).")
    budget_max_clock_skew_seconds: float = Field(
        5.0,
        ge=0,
        description="Budgeted requests fail closed (503) while this host's clock and Redis's "
        "differ by more: a window's period is read from this host's clock (0: not checked).",
    )
    budget_lease_max_units: int = Field(
        100,
        ge=0,
        description="Budget units a worker reserves in Redis at once and spends locally (0: a "
        "Redis call per request). Never an overspend; see docs/ARCHITECTURE.md.",
    )
    # below the 60 s a counter outlives its window, so a give-back lands before it expires
    budget_lease_seconds: float = Field(
        1.0, gt=0, le=30, description="A lease's unused units go back to Redis after this age."
    )
    check_timeout_seconds: float = Field(
        1.0, gt=0, description="A check never runs longer (then 503)."
    )
    # --- audit journal (authz_service/audit/journal.py; the shipper takes it to PostgreSQL) ---
    audit_journal_dir: Path = Field(
        Path("var/audit-journal"),
        description="Root of the audit journals: each process writes <dir>/<journal id>/.",
    )
    audit_fsync: Literal["off", "batch"] = Field(
        "off",
        description="off: each batch is written (in the page cache) before its checks are "
        "answered: a process crash loses nothing, a machine crash the last seconds. batch: "
        "also fdatasync it first (survives a machine crash; measured: -25 % saturation "
        "throughput, +6.5 ms p99 at 500 req/s). See authz_service/audit/README.md.",
    )
    audit_journal_max_bytes: int = Field(
        512 << 20,
        ge=1 << 16,
        description="Journal bytes not yet shipped (all journals under the dir) above which "
        "checks are refused with 503 audit_unavailable.",
    )
    audit_journal_headroom_bytes: int = Field(
        16 << 20,
        ge=0,
        description="Past the bound, the refusals' own records are journaled up to this much "
        "more; beyond it they are counted (authz_audit_records_dropped_total) but not written.",
    )
    audit_journal_segment_bytes: int = Field(
        4 << 20, ge=1 << 12, description="A journal segment is closed at this size."
    )
    audit_journal_scan_seconds: float = Field(
        0.5, gt=0, le=10, description="How often the journals' size is measured (off the loop)."
    )
    # --- end audit journal ---
    admin_address: str = Field(
        "127.0.0.1:9002",
        description="host:port of the GatewayAdmin API (Explain, Budget, Reload); empty: off.",
    )
    admin_dev_claims: bool = Field(
        False, description="Explain accepts raw claims instead of a token (development only)."
    )
    metrics_address: str = Field(
        "127.0.0.1:9464", description="host:port of the Prometheus endpoint (empty: off)."
    )
    health_interval_seconds: float = Field(5.0, gt=0, description="Dependency probe interval.")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="In-flight checks get this.")
    shutdown_drain_seconds: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, keep answering this long while health reports NOT_SERVING "
        "(lets health-checking peers move away before new checks are refused).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the JSON logs."
    )


# settings of the in-process PostgreSQL writer the journal replaced: set, they are ignored
RETIRED_SETTINGS = (
    "AUTHZ_DATABASE_URL", "AUTHZ_AUDIT_SPOOL_DIR", "AUTHZ_AUDIT_BATCH_SIZE",
    "AUTHZ_AUDIT_FLUSH_INTERVAL_SECONDS", "AUTHZ_AUDIT_QUEUE_BOUND", "AUTHZ_AUDIT_SPOOL_MAX_BYTES",
    "AUTHZ_AUDIT_FULL_SPOOL_POLICY", "AUTHZ_AUDIT_RETENTION_INTERVAL_SECONDS",
)  # fmt: skip


class SettingsLoadError(ValueError):
    """The environment is invalid; the message names the AUTHZ_ key and the reason."""


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_prefixed(cls: type[SettingsT], prefix: str) -> SettingsT:
    """Read a settings class from the environment once; fail with each bad key named."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            key = prefix + loc[0].upper() if loc else prefix
            where = "." + ".".join(loc[1:]) if len(loc) > 1 else ""
            lines.append(f"{key}{where}: {error['msg']}")
        raise SettingsLoadError("invalid settings:\n  " + "\n  ".join(lines)) from exc
    except SettingsError as exc:
        raise SettingsLoadError(f"invalid settings: {exc}") from exc


def load_settings() -> Settings:
    """Read the environment once; fail with the key named."""
    return load_prefixed(Settings, ENV_PREFIX)


def describe_prefixed(cls: type[BaseSettings], prefix: str) -> list[tuple[str, str, str]]:
    """(variable, default, description) of every setting of `cls`."""
    rows = []
    for name, info in cls.model_fields.items():
        default = "(required)" if info.is_required() else repr(info.get_default())
        rows.append((prefix + name.upper(), default, info.description or ""))
    return rows


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) of every setting: `python -m authz_service settings`."""
    return describe_prefixed(Settings, ENV_PREFIX)
