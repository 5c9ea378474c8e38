"""The audited client address is the one Envoy appended, never a client-supplied entry."""

import pytest

from authz_service.check_context import client_address


@pytest.mark.parametrize(
    ("forwarded_for", "peer", "expected"),
    [
        ("203.0.113.9", "127.0.0.1", "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9", "127.0.0.1", "203.0.113.9"),  # spoofed first entry ignored
        ("6.6.6.6,2001:db8::1", "", "2001:db8::1"),
        ("", "198.51.100.7", "198.51.100.7"),
        ("", "", None),
    ],
)
def test_client_address(forwarded_for: str, peer: str, expected: str | None) -> None:
    assert client_address(forwarded_for, peer) == expected
