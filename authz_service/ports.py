"""The seams of the service as Protocols: key source, policy engine, budget store, audit sink.

Adapters for the real services implement them; unit tests use small fakes at these seams.
"""

from __future__ import annotations

from typing import Protocol

from authz_service.audit.record import AccessLogCompletion, AuditRecord


class AuditSink(Protocol):
    def submit(self, record: AuditRecord) -> None:
        """Queue a record; never blocks and never raises into the request path."""

    def complete(self, completion: AccessLogCompletion) -> None:
        """Queue Envoy's final answer for a request already (or soon) submitted."""
