"""Fixtures of the authz unit tests (defined in authz_helpers, importable by the tests)."""

from tests.unit.authz.authz_helpers import (
    policy_engine,
    rsa_key_fixture,
    runtime_config,
    runtime_file,
    verifier,
)

__all__ = ["policy_engine", "rsa_key_fixture", "runtime_config", "runtime_file", "verifier"]
