"""Watches each Envoy's own account of its access log: writes it failed (a full or unwritable
disk) and a live log gone from where the shipper reads it. Both lose completions silently
otherwise: Envoy keeps answering, and its log is the only record of what it answered."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
from dataclasses import dataclass, field

from authz_service.shipper import metrics
from authz_service.shipper.access_logs import Stream, ask_admin

log = logging.getLogger(__name__)

WRITE_FAILED = "filesystem.write_failed"
_STAT_LINE = re.compile(rb"^filesystem\.write_failed: (\d+)$", re.MULTILINE)
_QUERY = "/stats?filter=%5Efilesystem%5C.write_failed%24"  # ^filesystem\.write_failed$


@dataclass
class EnvoyLogWatch:
    """Per stream: Envoy's failed log writes seen so far, and whether its live log is gone."""

    streams: list[Stream]
    failures: dict[str, int] = field(default_factory=dict)  # counted by the shipper, per stream
    missing: set[str] = field(default_factory=set)
    _seen: dict[str, int] = field(default_factory=dict)  # Envoy's counter at the last look

    def check(self) -> None:
        """One look at every stream (blocking: run it in a thread)."""
        for stream in self.streams:
            self._check_missing(stream)
            if stream.admin is not None:
                self._check_writes(stream, stream.admin)

    def _check_writes(self, stream: Stream, admin: str) -> None:
        try:
            status, body = ask_admin(admin, _QUERY, "GET")
        except (OSError, http.client.HTTPException, ValueError):
            return  # Envoy down or restarting: its log is looked at next time
        found = _STAT_LINE.search(body) if status == 200 else None
        if found is None:
            return
        total = int(found.group(1))
        before = self._seen.get(stream.name, 0)
        new = total if total < before else total - before  # a restarted Envoy counts anew
        self._seen[stream.name] = total
        if new <= 0:
            return
        self.failures[stream.name] = self.failures.get(stream.name, 0) + new
        metrics.DAMAGED.labels(source="access_log", reason="envoy_write_failed").inc(new)
        log.error(
            "access log %s: Envoy %s failed %d writes of it (disk full or unwritable?): "
            "the completions of the requests in them are lost", stream.path, stream.name, new,
        )  # fmt: skip

    def _check_missing(self, stream: Stream) -> None:
        if stream.path.exists() or rotated_pending(stream):
            self.missing.discard(stream.name)
            return
        if stream.name not in self.missing:
            self.missing.add(stream.name)
            metrics.DAMAGED.labels(source="access_log", reason="log_missing").inc()
            log.error(
                "access log %s of Envoy %s is gone (removed, or its directory replaced): what "
                "Envoy writes now is not shipped until it reopens its logs", stream.path,
                stream.name,
            )  # fmt: skip


def rotated_pending(stream: Stream) -> bool:
    """A rotated generation (`<log>.<digits>`) still there: the shipper renamed the live log
    and Envoy creates the new one at its next write (until then the live path is absent)."""
    generation = re.compile(re.escape(stream.path.name) + r"\.\d+")
    with contextlib.suppress(FileNotFoundError):
        return any(generation.fullmatch(name) for name in os.listdir(stream.path.parent))
    return False
