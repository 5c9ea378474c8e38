"""Load config/gateway.yaml (plus the files it references) into a checked GatewayConfig.

Every error is a ConfigError whose message is one line: `file: key.path: reason`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway_config.checks import find_problems
from gateway_config.models import SHADOW_STAGES, GatewayConfig
from gateway_config.policies import DEFAULT_POLICY_DIR

# Top-level sections that may be given as the name of a YAML file, relative to the config.
INCLUDABLE = ("rbac", "budgets")


class ConfigError(ValueError):
    """An invalid gateway config; str() is `file: key.path: reason`."""

    def __init__(self, file: Path | str, key_path: str, reason: str) -> None:
        self.file = str(file)
        self.key_path = key_path or "<root>"
        self.reason = " ".join(reason.split())  # one line, whatever the source said
        super().__init__(f"{self.file}: {self.key_path}: {self.reason}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; unreadable or malformed files raise ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "<root>", f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}" if mark is not None else "<root>"
        raise ConfigError(path, where, f"invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, "<root>", f"invalid YAML: {exc}") from exc


def deep_merge(base: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of `base` with `overrides` merged in; mappings merge, anything else replaces."""
    if not isinstance(base, dict):
        return copy.deepcopy(dict(overrides))
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def key_path(loc: Sequence[int | str]) -> str:
    """('routes', 2, 'match', 'prefix') -> 'routes[2].match.prefix'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith("function-after") or part.startswith("function-before"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _reason(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden" and len(loc) >= 2 and loc[-2] == "shadow":
        return f"unknown stage (the stages: {', '.join(SHADOW_STAGES)})"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _resolve_includes(raw: dict[str, Any], config_path: Path) -> dict[str, Path]:
    included: dict[str, Path] = {}
    for section in INCLUDABLE:
        value = raw.get(section)
        if isinstance(value, str):
            target = (config_path.parent / value).resolve()
            raw[section] = read_yaml(target)
            included[section] = target
    return included


_ROUTE_KEY = re.compile(r"^routes\[(\d+)\]")


def _naming_the_route(raw: Mapping[str, Any], key: str, reason: str) -> str:
    """Prefix the reason with the route's id when the key is inside routes[N]."""
    found = _ROUTE_KEY.match(key)
    routes = raw.get("routes")
    if found is None or not isinstance(routes, list) or int(found[1]) >= len(routes):
        return reason
    route = routes[int(found[1])]
    route_id = route.get("id") if isinstance(route, dict) else None
    return f"route {route_id!r}: {reason}" if isinstance(route_id, str) else reason


def load_gateway_config(
    config_path: Path,
    overrides: Mapping[str, Any] | None = None,
    policy_dir: Path | None = None,
) -> GatewayConfig:
    """Read, merge `overrides` into, validate and cross-check the gateway config.

    A route's `policy` must be a Rego package under policy_dir (default: the repo's policies/).
    """
    raw = read_yaml(config_path)
    if not isinstance(raw, dict):
        raise ConfigError(config_path, "<root>", "the config must be a mapping")
    included = _resolve_includes(raw, config_path)
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        file: Path = config_path
        head = loc[0] if loc else None
        if isinstance(head, str) and head in included:
            file = included[head]
            loc = loc[1:]
        where = key_path(loc)
        # only config_path has routes (includes are rbac/budgets), so a route is named there
        raise ConfigError(file, where, _naming_the_route(raw, where, _reason(first))) from exc
    problems = find_problems(config, policy_dir or DEFAULT_POLICY_DIR)
    if problems:
        where, reason = problems[0]
        raise ConfigError(config_path, where, _naming_the_route(raw, where, reason))
    return config
