"""A Verifier that answers one principal: Explain with development-mode claims."""

from __future__ import annotations

from authz_service.principal import Principal


class FixedPrincipal:
    """The verifier of an Explain with raw claims: every token is this principal."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    async def verify(self, token: str) -> Principal:
        return self._principal
