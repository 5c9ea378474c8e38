"""Who may import whom: render and the authz service meet only in gateway_contract.

Every module of each package is parsed and each import statement read (function-level ones
included), so a forbidden import anywhere fails here, not in a deployment that lacks the
other package (the Envoy image's render stage has no authz_service).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# package (or top-level module) -> the first-party packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "gateway_contract": frozenset(
        {"authz_service", "gateway_config", "render", "devstack", "bench", "backend", "tests"}
    ),
    "gateway_config": frozenset({"authz_service", "render", "devstack", "bench", "tests"}),
    "render": frozenset({"authz_service", "devstack", "bench", "tests"}),
    "authz_service": frozenset({"gateway_config", "render", "devstack", "bench", "tests"}),
}


def _modules(name: str) -> list[Path]:
    single = REPO_ROOT / f"{name}.py"
    if single.exists():
        return [single]
    return sorted((REPO_ROOT / name).rglob("*.py"))


def imported_packages(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_forbidden_package(package: str) -> None:
    modules = _modules(package)
    assert modules, f"no modules found for {package}"
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: imports {imported}"
        for path in modules
        for line, imported in imported_packages(path)
        if imported in FORBIDDEN[package]
    ]
    assert found == [], "\n".join(found)


def test_both_sides_import_the_contract() -> None:
    """The rule is not met by accident: render and the service do use gateway_contract."""
    for package in ("gateway_config", "render", "authz_service"):
        used = {name for path in _modules(package) for _, name in imported_packages(path)}
        assert "gateway_contract" in used, package


def test_the_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("def late():\n    import authz_service.pipeline\n    from render import x\n")
    assert list(imported_packages(module)) == [(2, "authz_service"), (3, "render")]
