"""Each component's serving state, one board read by both transports' health endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

OVERALL = ""
AUDIT_COMPONENT = "authz.audit"

Listener = Callable[[str, bool], Awaitable[None]]


class HealthBoard:
    """`""` (the server overall), `authz.opa`, `authz.redis`, `authz.audit`: serving or not.

    The gRPC health service mirrors it (a listener); the HTTP server reads it directly.
    """

    def __init__(self) -> None:
        self._states: dict[str, bool] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def set(self, name: str, serving: bool) -> None:
        self._states[name] = serving
        for listener in self._listeners:
            await listener(name, serving)

    def known(self, name: str) -> bool:
        return name in self._states

    def serving(self, name: str = OVERALL) -> bool:
        return self._states.get(name, False)

    def snapshot(self) -> dict[str, bool]:
        """Every component but the overall state, by name."""
        return {name: up for name, up in sorted(self._states.items()) if name != OVERALL}
