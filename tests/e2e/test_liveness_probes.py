"""make up's liveness probe of each part, on each transport: a frozen part (SIGSTOP: its port
accepts, nothing answers) fails it, and passes it again once resumed."""

from __future__ import annotations

import pytest

from tests.e2e._gateway_stack import GatewayStack
from tests.support.waiting import eventually

# the gateway's own processes and an Envoy of each tier; the datastores are the session's
# (shared by every stack), frozen under `make up` in tests/e2e/test_make_up_heals.py
PARTS = ("backend", "authz", "shipper", "envoy plant", "envoy cp")
RESUMED_WITHIN_S = 15.0


@pytest.mark.parametrize("name", PARTS)
def test_a_frozen_part_fails_its_liveness_probe_and_passes_it_once_resumed(
    gateway_stack: GatewayStack, name: str
) -> None:
    part = gateway_stack.part(name)
    assert part.alive(), f"{name} answers its liveness probe"
    part.pause()
    try:
        assert not part.alive(), f"frozen {name} must fail its liveness probe"
    finally:
        part.resume()
    eventually(part.alive, RESUMED_WITHIN_S, what=f"{name} alive again")
    assert part.running
