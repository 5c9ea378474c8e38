"""The audited client address is the one Envoy vouches for (x-client-ip), never a client's claim."""

import pytest

from authz_service.check_context import client_address


@pytest.mark.parametrize(
    ("vouched", "peer", "expected"),
    [
        ("203.0.113.9", "127.0.0.1", "203.0.113.9"),  # behind a trusted hop: the hop's client
        ("2001:db8::1", "", "2001:db8::1"),
        ("", "198.51.100.7", "198.51.100.7"),  # an Envoy that sets none: the peer
        ("", "", None),
    ],
)
def test_client_address(vouched: str, peer: str, expected: str | None) -> None:
    assert client_address(vouched, peer) == expected
