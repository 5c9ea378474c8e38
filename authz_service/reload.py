"""Live reload: re-read runtime.json and the policies, validate them, swap or keep the old ones.

On SIGHUP and on the admin API's Reload. A new revision is validated whole before anything
changes (runtime.json parsed and checked, every policy compiled); on success the pipeline's
config and the policy engine are swapped between two checks (nothing awaits in between), so
each check sees one revision. On error the running revision stays and the error is returned.

With the embedded engine (regopy) the new policies are compiled into a fresh engine; the old
one is closed after the checks that started with it have had time to finish. With an external
OPA server (AUTHZ_OPA_URL) loading policies is OPA's job (its bundles or `--watch`): Reload
compiles AUTHZ_POLICY_DIR with regopy to validate it and records its revision, and leaves the
engine alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from authz_service.pipeline import Pipeline
from authz_service.ports import PolicyEngine, PolicyEngineFactory, PolicyLoadError
from gateway_contract.runtime import (
    RuntimeConfigError,
    check_http_head_limit,
    check_policy_headers,
    load_runtime_config,
)

log = logging.getLogger(__name__)

RELOADS = Counter(
    "authz_reloads_total", "Reload attempts by result (applied|rejected).", ["result"]
)


def policy_files(policy_dir: Path) -> list[Path]:
    """The policies an engine loads (tests excluded), in a stable order."""
    return sorted(p for p in policy_dir.rglob("*.rego") if not p.name.endswith("_test.rego"))


def policy_revision(policy_dir: Path) -> str:
    """sha256 over the policies' relative paths and contents."""
    digest = hashlib.sha256()
    for file in policy_files(policy_dir):
        digest.update(str(file.relative_to(policy_dir)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ReloadResult:
    applied: bool
    config_revision: str
    policy_revision: str
    error: str = ""


class Reloader:
    def __init__(
        self,
        pipeline: Pipeline,
        runtime_config: Path,
        policy_dir: Path,
        *,
        embedded: bool,
        retire_after_seconds: float,
        engine_factory: PolicyEngineFactory,
        http_max_head_bytes: int | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._runtime_config = runtime_config
        self._policy_dir = policy_dir
        self._embedded = embedded
        self._retire_after = retire_after_seconds
        self._factory = engine_factory  # the embedded engine (wiring.py: RegopyEngine)
        self._http_max_head_bytes = http_max_head_bytes  # None: no HTTP transport
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def _current(self, error: str = "") -> ReloadResult:
        pipeline = self._pipeline
        return ReloadResult(not error, pipeline.config.revision, pipeline.policy.revision, error)

    async def reload(self) -> ReloadResult:
        """Validate and apply the files' revision; the running one stays on any error."""
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_runtime_config, self._runtime_config)
                check_policy_headers(self._runtime_config, config, self._pipeline.policy.headers)
                if self._http_max_head_bytes is not None:
                    check_http_head_limit(self._runtime_config, config, self._http_max_head_bytes)
                revision = await asyncio.to_thread(policy_revision, self._policy_dir)
                engine = await asyncio.to_thread(
                    self._factory, self._policy_dir, config.policy_paths()
                )
            except (RuntimeConfigError, PolicyLoadError, OSError) as exc:
                RELOADS.labels("rejected").inc()
                log.error("reload rejected; the running revision stays", extra={"error": str(exc)})  # noqa: TRY400
                return self._current(str(exc))
            if not self._embedded:  # validated only: the OPA server runs its own copy
                await engine.close()
                engine = self._pipeline.policy.engine
            # the swap: no await between these two assignments
            self._pipeline.config = config
            old = self._pipeline.policy.swap(engine, revision)
            if old is not engine:
                self._retire(old)
            RELOADS.labels("applied").inc()
            result = self._current()
            log.info(
                "reload applied",
                extra={"config_revision": result.config_revision, "policy_revision": revision},
            )
            return result

    def _retire(self, engine: PolicyEngine) -> None:
        """Close a replaced engine once the checks that may still use it are over."""

        async def close_later() -> None:
            try:
                await asyncio.sleep(self._retire_after)
            finally:
                await engine.close()

        task = asyncio.create_task(close_later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
