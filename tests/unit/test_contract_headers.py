"""The contract's header namespace: every header the service or its transport adds is one the
Lua filter drops from clients, so a client can never speak in the gateway's name."""

from __future__ import annotations

from pathlib import Path

import render
from gateway_contract.headers import (
    AUTHZ_HEADER_PREFIX,
    DECISION_HEADER,
    HTTP_CHECK_ADDED_HEADERS,
    IDENTITY_HEADERS,
    PEER_HEADER,
    ROUTE_FACTS_HEADER,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"


def test_the_service_and_transport_headers_are_in_the_reserved_namespace() -> None:
    added = {ROUTE_FACTS_HEADER, PEER_HEADER, DECISION_HEADER, *HTTP_CHECK_ADDED_HEADERS}
    assert all(name.startswith(AUTHZ_HEADER_PREFIX) for name in added), added
    assert "x-authz-decision-id" in IDENTITY_HEADERS


def test_every_listener_drops_the_namespace_the_contract_names(tmp_path: Path) -> None:
    render.render_all(EXAMPLE, tmp_path, create_log_dir=False)
    for entry in ("plant", "cp", "pp"):
        lds = (tmp_path / "envoy" / entry / "lds.yaml").read_text(encoding="utf-8")
        # the Lua filter's prefix (request_ids.lua.j2), rendered from the contract
        assert f'local AUTHZ_PREFIX = "{AUTHZ_HEADER_PREFIX}"' in lds, entry
