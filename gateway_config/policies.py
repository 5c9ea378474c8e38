"""The Rego packages a policy dir defines, so a route's `policy` can be checked against them."""

from __future__ import annotations

import re
from pathlib import Path

# The repo's policies/, next to this package (also where the compose image copies them).
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
_PACKAGE_LINE = re.compile(
    r"^[ \t]*package[ \t]+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)[ \t]*(?:#.*)?$", re.M
)


def rego_packages(policy_dir: Path) -> frozenset[str]:
    """`package a.b` names of every *.rego under policy_dir except tests; empty when none."""
    if not policy_dir.is_dir():
        return frozenset()
    return frozenset(
        match.group(1)
        for source in sorted(policy_dir.rglob("*.rego"))
        if not source.name.endswith("_test.rego")
        for match in _PACKAGE_LINE.finditer(source.read_text(encoding="utf-8"))
    )


def policy_package(policy: str) -> str:
    """The Rego package a route's policy path queries: gateway/authz -> gateway.authz."""
    return policy.replace("/", ".")
