"""`python -m authz_service audit ship|verify|settings`: the shipper, the chain check, settings."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from authz_service.logging_setup import configure_logging
from authz_service.settings import SettingsLoadError


def _ship() -> int:
    from authz_service.shipper.run import ship  # noqa: PLC0415
    from authz_service.shipper.settings import load_shipper_settings  # noqa: PLC0415

    try:
        settings = load_shipper_settings()
    except SettingsLoadError as error:
        print(f"audit ship: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(ship(settings))
    except (OSError, ValueError) as error:
        print(f"audit ship: {error}", file=sys.stderr)
        return 2
    return 0


def _verify() -> int:
    from authz_service.audit.verify import load_verify_settings, verify  # noqa: PLC0415

    try:
        settings = load_verify_settings()
        report = asyncio.run(verify(settings.database_url))
    except SettingsLoadError as error:
        print(f"audit verify: {error}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as error:
        print(f"audit verify: cannot read the audit trail: {error}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(finding)
    print(report.summary(), file=sys.stderr)
    return 1 if report.findings else 0


def _settings() -> int:
    from authz_service.audit.verify import ENV_PREFIX, VerifySettings  # noqa: PLC0415
    from authz_service.settings import describe_prefixed  # noqa: PLC0415
    from authz_service.shipper.settings import describe_shipper_settings  # noqa: PLC0415

    for name, default, description in [
        *describe_shipper_settings(),
        *describe_prefixed(VerifySettings, ENV_PREFIX),
    ]:
        print(f"{name}\n    default: {default}\n    {description}")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authz_service audit",
        description="ship: journals and Envoy's access logs into PostgreSQL (AUTHZ_SHIPPER_*); "
        "verify: recompute the hash chains (AUTHZ_VERIFY_DATABASE_URL; exit 1 on findings); "
        "settings: list both.",
    )
    parser.add_argument("command", choices=["ship", "verify", "settings"])
    args = parser.parse_args(argv)
    commands = {"ship": _ship, "verify": _verify, "settings": _settings}
    return commands[args.command]()
