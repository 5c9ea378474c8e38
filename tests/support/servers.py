"""The authz service in the test's own process, on either transport: `serving(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

from authz_service.server import serve
from authz_service.settings import Settings
from tests.support.free_ports import LOOPBACK, free_port
from tests.support.issuers import hs256_issuer

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0


def service_settings(
    tmp_path: Path,
    runtime: Mapping[str, Any],
    *,
    transport: Literal["grpc", "http"] = "grpc",
    **extra: Any,
) -> Settings:
    """Settings for one test's service: `runtime` written to tmp_path, the test issuer trusted,
    the journal under tmp_path, a free port for `transport`, metrics and the admin API off
    (`extra` sets any other, e.g. admin_address=...)."""
    runtime_path = tmp_path / "runtime.json"
    runtime_path.write_text(json.dumps(runtime))
    address = f"{LOOPBACK}:{free_port()}"
    fields: dict[str, Any] = {
        "grpc_address": address if transport == "grpc" else "",
        "http_address": address if transport == "http" else "",
        "runtime_config": runtime_path,
        "jwt_issuers": [hs256_issuer()],
        "audit_journal_dir": tmp_path / "journal",
        "metrics_address": "",
        "admin_address": "",
        **extra,
    }
    return Settings(**fields)


def address_of(settings: Settings) -> str:
    """Where the service answers checks: its gRPC address, else its HTTP one."""
    return settings.grpc_address or settings.http_address


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """`authz_service.server.serve` as a task of this event loop, started (listening) on entry;
    on exit stopped as SIGTERM stops it (drain, in-flight checks, the journal closed) unless the
    test stopped it already. Yields the task (done once the server has stopped)."""
    started = asyncio.Event()
    task = asyncio.create_task(serve(settings, started))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not started.is_set():
        waiter.cancel()
        if task.done():
            task.result()  # its error, as raised
        task.cancel()
        raise AssertionError(f"the service did not start within {START_TIMEOUT_S:g}s")
    try:
        yield task
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: graceful stop
        await asyncio.wait_for(task, STOP_TIMEOUT_S)
