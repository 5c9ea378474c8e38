"""`python -m authz_service [serve|settings|health|explain|budget|reload|audit ...]`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from authz_service.adapters.static_keys import KeyConfigError
from authz_service.logging_setup import configure_logging
from authz_service.ports import PolicyLoadError
from authz_service.settings import SettingsLoadError, describe_settings, load_settings
from gateway_contract.runtime import RuntimeConfigError

ADMIN_COMMANDS = ("explain", "budget", "reload")


def _run_serve() -> int:
    try:
        settings = load_settings()
    except SettingsLoadError as exc:
        print(f"authz_service: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.workers > 1 and settings.worker_index is None:
        from authz_service.workers import supervise  # noqa: PLC0415

        return supervise(settings)
    from authz_service.server import serve  # noqa: PLC0415 - grpc loads only when serving

    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except (RuntimeConfigError, PolicyLoadError, KeyConfigError, OSError) as exc:
        print(f"authz_service: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_settings() -> int:
    for name, default, description in describe_settings():
        print(f"{name}\n    default: {default}\n    {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["health"]:
        from authz_service.health_probe import main as health_main  # noqa: PLC0415

        return health_main(argv[1:])
    if argv[:1] == ["audit"]:
        from authz_service.audit_cli import main as audit_main  # noqa: PLC0415

        return audit_main(argv[1:])
    if any(arg in ADMIN_COMMANDS for arg in argv):
        from authz_service.admin_cli import main as admin_main  # noqa: PLC0415 - grpc on demand

        return admin_main(argv)
    parser = argparse.ArgumentParser(prog="python -m authz_service")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "settings", "health", "audit", *ADMIN_COMMANDS],
    )
    args = parser.parse_args(argv)
    return _run_serve() if args.command == "serve" else _print_settings()


if __name__ == "__main__":
    sys.exit(main())
