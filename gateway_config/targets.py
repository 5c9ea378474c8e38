"""Render targets (config/targets.yaml): per-target overrides of addresses, TLS and identity."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway_config.loader import ConfigError, key_path, read_yaml

DEFAULT_TARGETS_FILE = Path(__file__).resolve().parents[1] / "config" / "targets.yaml"
# What a target may change; everything else (routes, RBAC, budgets, limits) is shared.
TARGET_SECTIONS = frozenset({"entry_points", "upstreams", "authz", "tls_ca_file", "audit"})


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    variables: dict[str, str | None] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)


def load_targets(path: Path = DEFAULT_TARGETS_FILE) -> dict[str, Target]:
    """Every target of the file, checked; ConfigError names the file, key and reason."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(path, "<root>", "expected a mapping of target names to targets")
    targets: dict[str, Target] = {}
    for name, body in raw.items():
        try:
            targets[str(name)] = Target.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(path, key_path([name, *first["loc"]]), first["msg"]) from exc
        outside = sorted(set(targets[str(name)].overrides) - TARGET_SECTIONS)
        if outside:
            raise ConfigError(
                path,
                f"{name}.overrides.{outside[0]}",
                "a target changes only entry_points, upstreams, authz, tls_ca_file and audit",
            )
    return targets


def target_overrides(
    name: str, variables: Mapping[str, str], path: Path = DEFAULT_TARGETS_FILE
) -> dict[str, Any]:
    """The overrides of target `name` with its ${variables} filled in."""
    targets = load_targets(path)
    if name not in targets:
        raise ConfigError(path, name, f"unknown target (defined: {', '.join(targets)})")
    target = targets[name]
    unknown = sorted(set(variables) - set(target.variables))
    if unknown:
        known = ", ".join(target.variables) or "none"
        raise ConfigError(path, f"{name}.variables", f"no variable {unknown[0]!r} (known: {known})")
    values = {key: value for key, value in target.variables.items() if value is not None}
    values.update(variables)
    filled: dict[str, Any] = _fill(target.overrides, values, path, f"{name}.overrides")
    return filled


def _fill(node: Any, values: Mapping[str, str], path: Path, where: str) -> Any:
    if isinstance(node, dict):
        return {key: _fill(value, values, path, f"{where}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, values, path, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, str):
        return node
    try:
        return string.Template(node).substitute(values)
    except KeyError as exc:
        variable = exc.args[0]
        raise ConfigError(
            path, where, f"${{{variable}}} has no value: pass --var {variable}=VALUE"
        ) from exc
    except ValueError as exc:
        raise ConfigError(path, where, f"invalid ${{...}} placeholder: {exc}") from exc
