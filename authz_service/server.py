"""The serving process: gRPC and/or HTTP ext_authz, health, the admin API, SIGHUP, the journal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.auth.v3.external_auth_pb2_grpc import add_AuthorizationServicer_to_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from authz_service.admin import GatewayAdminService, admin_server
from authz_service.audit.journal import Journal
from authz_service.checker import Checker
from authz_service.health import AUDIT_COMPONENT, OVERALL, HealthBoard
from authz_service.http_connection import HttpLimits
from authz_service.http_server import HttpCheckServer, split_address
from authz_service.metrics import start_metrics_server
from authz_service.servicer import AuthorizationService
from authz_service.settings import RETIRED_SETTINGS, Settings
from authz_service.wiring import Components, build_components
from authz_service.workers import beat

log = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GC_THRESHOLDS = (10_000, 50, 100)
# the journal's state changes quickly (its size bound): reported at this pace, not the probes'
_AUDIT_HEALTH_INTERVAL_SECONDS = 0.5


async def _watch_health(board: HealthBoard, components: Components, interval: float) -> None:
    while True:
        for name, probe in components.health_probes.items():
            await board.set(name, await probe())
        await asyncio.sleep(interval)


async def _watch_journal(board: HealthBoard, journal: Journal) -> None:
    """authz.audit: SERVING while the journal is writable and under its bound."""
    while True:
        await board.set(AUDIT_COMPONENT, journal.healthy)
        await asyncio.sleep(_AUDIT_HEALTH_INTERVAL_SECONDS)


def _mirror_to_grpc(board: HealthBoard, health: health_aio.HealthServicer) -> None:
    async def mirror(name: str, serving: bool) -> None:
        await health.set(name, _SERVING if serving else _NOT_SERVING)

    board.listen(mirror)


def _reload_on_sighup(loop: asyncio.AbstractEventLoop, components: Components) -> None:
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        task = asyncio.create_task(components.reloader.reload())
        reloads.add(task)  # kept referenced until done
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)


def _admin(settings: Settings, components: Components) -> grpc.aio.Server | None:
    if not settings.admin_address:
        return None
    in_group = settings.worker_index is not None
    service = GatewayAdminService(
        components.pipeline,
        components.reloader,
        dev_claims=settings.admin_dev_claims,
        timeout_seconds=settings.check_timeout_seconds,
        on_applied=(lambda: os.kill(os.getppid(), signal.SIGHUP)) if in_group else None,
    )
    return admin_server(service, settings.admin_address)


def _grpc_server(
    settings: Settings, checks: AuthorizationService
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    """The gRPC data plane: Check, health and reflection on AUTHZ_GRPC_ADDRESS."""
    reuse = 1 if settings.worker_index is not None else 0  # workers share the port
    server = grpc.aio.server(options=[("grpc.so_reuseport", reuse)])
    add_AuthorizationServicer_to_server(checks, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [
        external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(settings.grpc_address)
    except RuntimeError as exc:
        raise OSError(f"AUTHZ_GRPC_ADDRESS: cannot listen on {settings.grpc_address}") from exc
    if port == 0:
        raise OSError(f"AUTHZ_GRPC_ADDRESS: cannot listen on {settings.grpc_address}")
    return server, health


def _http_server(settings: Settings, checker: Checker, board: HealthBoard) -> HttpCheckServer:
    limits = HttpLimits(
        max_headers=settings.http_max_headers,
        max_head_bytes=settings.http_max_head_bytes,
        max_pipelined=settings.http_max_pipelined,
        header_timeout_seconds=settings.http_header_timeout_seconds,
        idle_timeout_seconds=settings.http_idle_timeout_seconds,
    )
    reuse = settings.worker_index is not None
    return HttpCheckServer(checker, board, settings.http_address, limits, reuse_port=reuse)


def _metrics_address(settings: Settings) -> str:
    """Worker i of a group serves its metrics on the setting's port + i."""
    if not settings.metrics_address or settings.worker_index is None:
        return settings.metrics_address
    host, port = split_address(settings.metrics_address)
    return f"{host}:{port + settings.worker_index}"


def _journal(settings: Settings) -> Journal:
    for name in RETIRED_SETTINGS:
        if os.environ.get(name):
            log.warning("%s is no longer used: the audit shipper writes to PostgreSQL", name)
    return Journal(
        settings.audit_journal_dir,
        fsync=settings.audit_fsync,
        segment_bytes=settings.audit_journal_segment_bytes,
        max_bytes=settings.audit_journal_max_bytes,
        headroom_bytes=settings.audit_journal_headroom_bytes,
        scan_interval=settings.audit_journal_scan_seconds,
    )


@dataclass
class _Transports:
    """Everything that answers: gRPC (Check, health), HTTP (checks, health), the admin API."""

    checks: AuthorizationService
    grpc_parts: tuple[grpc.aio.Server, health_aio.HealthServicer] | None
    http: HttpCheckServer | None
    admin: grpc.aio.Server | None

    async def start(self, settings: Settings) -> None:
        if self.grpc_parts is not None:
            await self.grpc_parts[0].start()
        if self.http is not None:
            await self.http.start()
        if self.admin is not None:
            await self.admin.start()
            log.info("admin API listening", extra={"address": settings.admin_address})

    async def unready(self) -> None:
        """Health says NOT_SERVING; checks are still answered (the drain period)."""
        if self.grpc_parts is not None:
            await self.grpc_parts[1].enter_graceful_shutdown()
        if self.admin is not None:
            await self.admin.stop(0)

    async def stop(self, grace: float) -> None:
        """Refuse new checks, let in-flight ones finish (each journals before it answers)."""
        if self.http is not None:
            self.http.stop_accepting()
        stopping = asyncio.create_task(self.grpc_parts[0].stop(grace)) if self.grpc_parts else None
        idle = await self.checks.wait_idle(grace)
        if self.http is not None:
            await self.http.stop(0)
        if self.grpc_parts is not None and stopping is not None:
            if idle:
                await self.grpc_parts[0].stop(0)
            await stopping


def _transports(settings: Settings, components: Components, journal: Journal) -> _Transports:
    if not settings.grpc_address and not settings.http_address:
        raise OSError("AUTHZ_GRPC_ADDRESS and AUTHZ_HTTP_ADDRESS: set at least one")
    checks = AuthorizationService(
        components.pipeline, journal, timeout_seconds=settings.check_timeout_seconds
    )
    grpc_parts = _grpc_server(settings, checks) if settings.grpc_address else None
    http = (
        _http_server(settings, checks.checker, components.health) if settings.http_address else None
    )
    admin = _admin(settings, components) if settings.worker_index in (None, 0) else None
    if grpc_parts is not None:
        _mirror_to_grpc(components.health, grpc_parts[1])
    return _Transports(checks, grpc_parts, http, admin)


async def serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT: then stop accepting, finish in-flight checks, close the journal."""
    components = build_components(settings)
    journal = _journal(settings)
    transports = _transports(settings, components, journal)
    board = components.health
    try:
        await journal.open()
    except OSError as error:
        raise OSError(f"AUTHZ_AUDIT_JOURNAL_DIR: cannot open a journal: {error}") from error
    await transports.start(settings)
    if settings.metrics_address:
        start_metrics_server(_metrics_address(settings))
    await board.set(OVERALL, True)
    watchers = [
        asyncio.create_task(_watch_health(board, components, settings.health_interval_seconds)),
        asyncio.create_task(_watch_journal(board, journal)),
    ]
    # beats until the very end: a worker draining is not hung
    heart = None if settings.worker_heartbeat_fd is None else asyncio.create_task(
        beat(settings.worker_heartbeat_fd)
    )  # fmt: skip
    log.info(
        "authz service listening",
        extra={"grpc": settings.grpc_address, "http": settings.http_address},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _reload_on_sighup(loop, components)
    # Everything built so far lives as long as the process: moved out of the collector's
    # reach, a full collection no longer walks it (a 10-30 ms pause in the p99.9 otherwise).
    gc.freeze()
    # A check allocates a few hundred short-lived, acyclic objects: with the default (700, 10,
    # 10) the young generation is collected every few checks. Rarer collections: 7 % less CPU
    # per check (bench.pipeline_cost --transport http, 79 -> 73 µs); cycles still go, later.
    gc.set_threshold(*GC_THRESHOLDS)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight checks")
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        loop.remove_signal_handler(signal.SIGHUP)
        await board.set(OVERALL, False)
        await transports.unready()
        await asyncio.sleep(settings.shutdown_drain_seconds)
        await transports.stop(settings.shutdown_grace_seconds)
        await journal.close()
        await components.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if heart is not None:
            heart.cancel()
        log.info("stopped")
