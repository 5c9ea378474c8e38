"""The shipper's one flat Settings, read once from AUTHZ_SHIPPER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from authz_service.settings import describe_prefixed, load_prefixed

ENV_PREFIX = "AUTHZ_SHIPPER_"


class ShipperSettings(BaseSettings):
    """Every setting of `python -m authz_service audit ship`: AUTHZ_SHIPPER_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = Field(
        min_length=1,
        description="PostgreSQL as the shipper login (a member of gateway_audit_shipper).",
    )
    journal_dir: Path = Field(
        Path("var/audit-journal"), description="The authz journals' root (AUTHZ_AUDIT_JOURNAL_DIR)."
    )
    access_log_manifest: Path | None = Field(
        None,
        description="Render's build/audit/access_logs.json: Envoy's access-log files and "
        "admin addresses (unset: journals only).",
    )
    access_logs: str = Field(
        "",
        description="Comma-separated entry points of the manifest to tail (a pod or a Cloud "
        "Run instance runs one Envoy); empty: every one it lists.",
        pattern=r"^[a-z0-9_,-]*$",
    )
    health_address: str = Field(
        "127.0.0.1:9465",
        description="host:port of GET /health (JSON, 200 or 503) and GET /metrics; empty: off.",
    )
    batch_rows: int = Field(10_000, ge=1, description="Rows per transaction at most.")
    hold_seconds: float = Field(
        2.0, ge=0, description="A decision waits this long for its completion before going alone."
    )
    poll_seconds: float = Field(0.1, gt=0, le=10, description="Pause when nothing new was read.")
    retry_seconds: float = Field(
        1.0, gt=0, description="Pause before retrying a batch PostgreSQL could not take."
    )
    write_timeout_seconds: float = Field(30.0, gt=0, description="One batch's longest write.")
    access_log_rotate_bytes: int = Field(
        64 << 20, ge=1 << 12, description="An access log shipped past this size is rotated."
    )
    retention_database_url: str = Field(
        "",
        description="PostgreSQL as the retention login; set: run the 90-day deletion every "
        "interval unless pg_cron has the job. Empty: off (pg_cron runs it).",
    )
    retention_interval_seconds: float = Field(3600.0, gt=0, description="Retention run interval.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the JSON logs."
    )

    def access_log_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.access_logs.split(",") if name)


def load_shipper_settings() -> ShipperSettings:
    return load_prefixed(ShipperSettings, ENV_PREFIX)


def describe_shipper_settings() -> list[tuple[str, str, str]]:
    return describe_prefixed(ShipperSettings, ENV_PREFIX)
