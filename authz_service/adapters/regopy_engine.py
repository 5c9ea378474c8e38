"""PolicyEngine evaluating policies/ in-process with the embedded Rego engine regopy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import regopy

from authz_service.errors import DependencyUnavailableError

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class PolicyLoadError(ValueError):
    """The policy directory has no policies or one does not compile; the message names the file."""


class RegopyEngine:
    """One interpreter used by one worker thread: evaluations are serialized off the event loop."""

    def __init__(self, policy_dir: Path, *, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._interpreter = regopy.Interpreter()
        files = sorted(p for p in policy_dir.rglob("*.rego") if not p.name.endswith("_test.rego"))
        if not files:
            raise PolicyLoadError(f"{policy_dir}: no .rego policies found")
        for file in files:
            try:
                self._interpreter.add_module(
                    str(file.relative_to(policy_dir)), file.read_text("utf-8")
                )
            except regopy.RegoError as exc:
                raise PolicyLoadError(f"{file}: does not parse: {exc}") from exc
        probe = self._interpreter.query("true")
        if not probe.ok():
            raise PolicyLoadError(f"{policy_dir}: policies do not compile: {probe}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regopy")

    def _evaluate_sync(self, path: str, input_json: str) -> Mapping[str, Any] | None:
        self._interpreter.set_input_term(input_json)
        output = self._interpreter.query("data." + path.replace("/", "."))
        if not output.ok():
            raise DependencyUnavailableError("regopy", "evaluation error")
        expressions = getattr(output.results[0], "expressions", None) if output.results else None
        if not expressions:
            return None
        result = expressions[0]
        return result if isinstance(result, dict) else None

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        path = path.strip("/")
        if not _PATH.match(path):
            raise DependencyUnavailableError("regopy", "invalid policy path")
        input_json = orjson.dumps(input_doc).decode()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._evaluate_sync, path, input_json)
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError as exc:
            raise DependencyUnavailableError("regopy", "evaluation timed out") from exc

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
