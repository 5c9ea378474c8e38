"""PolicyEngine evaluating policies/ in-process with the embedded Rego engine regopy."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import regopy

from authz_service.errors import DependencyUnavailableError
from authz_service.ports import PolicyLoadError

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class RegopyEngine:
    """One interpreter, evaluated on the event loop's thread with a compiled bundle per path.

    Why inline and not in a worker thread: a compiled evaluation takes ~0.15 ms of CPU
    (measured on policies/), while handing the result back from a thread costs a GIL
    hand-off that waits up to the interpreter's switch interval (5 ms) on a busy loop; the
    thread made the p99 worse, not better. Why a bundle: `query("data.x")` re-compiles the
    query each time (~1.2 ms); a bundle built once per policy path is queried in ~0.05 ms.
    """

    def __init__(self, policy_dir: Path, entrypoints: Iterable[str] = ()) -> None:
        """Load and compile `policy_dir`; the routes' policy paths (`entrypoints`) are built
        now, off the request path (a build takes a few ms), and must compile."""
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
        self._bundles: dict[str, regopy.Bundle] = {}
        for path in entrypoints:
            try:
                self._bundle(path.strip("/"))
            except DependencyUnavailableError as exc:
                raise PolicyLoadError(f"{policy_dir}: policy {path} does not compile") from exc

    def _bundle(self, path: str) -> regopy.Bundle:
        bundle = self._bundles.get(path)
        if bundle is None:
            try:
                bundle = self._interpreter.build(None, [path])
            except regopy.RegoError as exc:
                raise DependencyUnavailableError("regopy", "policy does not compile") from exc
            self._bundles[path] = bundle
        return bundle

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        path = path.strip("/")
        if not _PATH.match(path):
            raise DependencyUnavailableError("regopy", "invalid policy path")
        bundle = self._bundle(path)
        self._interpreter.set_input(regopy.Input(dict(input_doc)))
        output = self._interpreter.query_bundle_entrypoint(bundle, path)
        if not output.ok():
            raise DependencyUnavailableError("regopy", "evaluation error")
        expressions = getattr(output.results[0], "expressions", None) if output.results else None
        if not expressions:
            return None
        result = expressions[0]
        return result if isinstance(result, dict) else None

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._bundles.clear()
