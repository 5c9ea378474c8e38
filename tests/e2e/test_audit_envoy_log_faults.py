"""Envoy's access log failing under a running gateway: never a silent loss of completions.

Faults pass of 2026-11-30: a 64 KiB tmpfs under PLANT's access log, filled; 400 requests all
answered 200, Envoy counted 43 failed writes (`filesystem.write_failed`), and the shipper said
nothing: those requests' rows never got their completion. The shipper now reads each Envoy's
own count and reports it (metric, log, /health). A log written to /dev/full fails every write
the same way a full disk does, without mounting anything.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from devstack import PostgresService
from tests.e2e._audit_stack import AuditDatabase, audit_database, audited_stack_options
from tests.e2e._gateway_stack import GatewayStack, StackOptions, shipper_health
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> AuditDatabase:
    return audit_database(postgres, "e2e_envoy_log")


@pytest.fixture(scope="module")
def gateway_stack_options(
    gateway_stack_types: tuple[type[StackOptions], type[GatewayStack]], audit_db: AuditDatabase
) -> StackOptions:
    return audited_stack_options(gateway_stack_types, audit_db)


def _reopen_logs(stack: GatewayStack, entry: str) -> None:
    request = urllib.request.Request(f"{stack.envoys[entry].admin_url}/reopen_logs", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200


def test_an_access_log_envoy_cannot_write_is_counted_and_reported(
    gateway_stack: GatewayStack,
) -> None:
    log = gateway_stack.access_log_dir / "plant.log"
    saved = log.with_name("plant.log.saved-by-test")
    token = gateway_stack.sign_token()
    log.rename(saved)
    os.symlink("/dev/full", log)  # every write: ENOSPC
    try:
        _reopen_logs(gateway_stack, "plant")
        for _ in range(20):  # Envoy answers on: its log is its own affair
            reply = gateway_stack.request("plant", "GET", "/api/v1/me", token=token)
            assert reply.status == 200

        def reported() -> bool:
            _, body = shipper_health(gateway_stack)
            return int(body.get("envoy_log_write_failures", {}).get("plant", 0)) > 0

        eventually(reported, 30, what="the shipper reporting Envoy's failed log writes")
    finally:
        log.unlink()
        saved.rename(log)
        _reopen_logs(gateway_stack, "plant")


def test_an_access_log_gone_from_its_directory_is_reported(gateway_stack: GatewayStack) -> None:
    log: Path = gateway_stack.access_log_dir / "cp.log"
    hidden = log.with_name("cp.log.hidden-by-test")
    log.rename(hidden)  # as a directory mounted over it, or a stray `rm`, leaves it
    try:

        def reported() -> bool:
            _, body = shipper_health(gateway_stack)
            return "cp" in body.get("missing_access_logs", [])

        eventually(reported, 30, what="the shipper naming the missing access log")
    finally:
        hidden.rename(log)

    def back() -> bool:
        return "cp" not in shipper_health(gateway_stack)[1].get("missing_access_logs", ["cp"])

    eventually(back, 30, what="the report cleared once the log is back")
