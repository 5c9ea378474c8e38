"""Cross-reference checks a schema cannot express; each problem is (key path, reason)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gateway_config.models import GatewayConfig, Route
from gateway_config.policies import policy_package, rego_packages
from gateway_contract.runtime import GatewayType

Problem = tuple[str, str]


def find_problems(config: GatewayConfig, policy_dir: Path) -> list[Problem]:
    """Every cross-reference problem in document order; empty when the config is consistent.

    A route's `policy` must name a Rego package defined under policy_dir.
    """
    return [
        *_duplicate_ports(config),
        *_entry_point_links(config),
        *_limits(config),
        *_rbac_permissions(config),
        *_route_references(config),
        *_route_authorization(config, policy_dir),
    ]


def _holders(config: GatewayConfig, gateway_type: GatewayType, permission: str) -> list[str]:
    """The roles of a gateway type that grant a permission ("*" grants every one)."""
    roles = config.rbac.get(gateway_type, {})
    return [role for role, granted in roles.items() if "*" in granted or permission in granted]


def _granted_anywhere(config: GatewayConfig, permission: str) -> bool:
    return any(_holders(config, gateway_type, permission) for gateway_type in config.rbac)


def _duplicate_ports(config: GatewayConfig) -> Iterator[Problem]:
    seen: dict[tuple[str, int], str] = {}

    def claim(path: str, host: str, port: int) -> Iterator[Problem]:
        # 0.0.0.0 binds every address, so it collides with any host on that port
        for key in ((host, port), ("0.0.0.0", port)) if host != "0.0.0.0" else [(host, port)]:
            if key in seen:
                yield path, f"port {port} is already used by {seen[key]}"
                return
        seen[(host, port)] = path

    for name, entry in config.entry_points.items():
        yield from claim(f"entry_points.{name}.port", entry.address, entry.port)
        yield from claim(f"entry_points.{name}.admin.port", entry.admin.address, entry.admin.port)
        if entry.internal is not None:
            internal = entry.internal
            yield from claim(f"entry_points.{name}.internal.port", internal.address, internal.port)
    yield from claim("authz.port", config.authz.host, config.authz.port)
    for name, upstream in config.upstreams.items():
        yield from claim(f"upstreams.{name}.port", upstream.host, upstream.port)


def _entry_point_links(config: GatewayConfig) -> Iterator[Problem]:
    types_seen: dict[str, str] = {}
    for name, entry in config.entry_points.items():
        if entry.gateway_type in types_seen:
            yield (
                f"entry_points.{name}.gateway_type",
                f"{entry.gateway_type} is already the type of entry point "
                f"{types_seen[entry.gateway_type]!r}",
            )
        types_seen[entry.gateway_type] = name
        forwarded_to = any(other.via == name for other in config.entry_points.values())
        if forwarded_to and entry.internal is None:
            yield (
                f"entry_points.{name}.internal",
                "other entry points forward to it: give them an internal listener "
                "(internal: {port: ...}), the only way in that trusts x-causation-id",
            )
        elif entry.internal is not None and not forwarded_to:
            yield f"entry_points.{name}.internal", "no entry point forwards to it (via)"
        if entry.via is None:
            continue
        target = config.entry_points.get(entry.via)
        if target is None:
            yield f"entry_points.{name}.via", f"unknown entry point {entry.via!r}"
        elif target.via is not None or entry.via == name:
            yield f"entry_points.{name}.via", f"{entry.via!r} must send to an upstream itself"


def _limits(config: GatewayConfig) -> Iterator[Problem]:
    limits = config.limits
    if limits.max_path_bytes >= limits.max_request_headers_kb * 1024:
        yield (
            "limits.max_path_bytes",
            f"{limits.max_path_bytes} bytes is not below max_request_headers_kb "
            f"({limits.max_request_headers_kb} KiB), which already bounds the path",
        )


def _rbac_permissions(config: GatewayConfig) -> Iterator[Problem]:
    if not config.permissions:
        yield "permissions", "declare the permissions the routes and roles use"
    declared = set(config.permissions)
    for gateway_type, roles in config.rbac.items():
        for role, permissions in roles.items():
            for index, permission in enumerate(permissions):
                if permission != "*" and permission not in declared:
                    yield (
                        f"rbac.{gateway_type}.{role}[{index}]",
                        f"unknown permission {permission!r} (not in permissions)",
                    )
    used = {route.permission for route in config.routes}
    for index, permission in enumerate(config.permissions):
        # a permission a route uses is reported on that route (see _route_authorization)
        if permission not in used and not _granted_anywhere(config, permission):
            yield f"permissions[{index}]", f"permission {permission!r} is granted to no role"


def _route_references(config: GatewayConfig) -> Iterator[Problem]:
    seen_ids: dict[str, int] = {}
    declared = set(config.permissions)
    for index, route in enumerate(config.routes):
        where = f"routes[{index}]"
        if route.id in seen_ids:
            yield (
                f"{where}.id",
                f"duplicate route id {route.id!r} (also routes[{seen_ids[route.id]}])",
            )
        seen_ids.setdefault(route.id, index)
        if route.upstream not in config.upstreams:
            yield f"{where}.upstream", f"unknown upstream {route.upstream!r}"
        if route.permission is not None and route.permission not in declared:
            yield f"{where}.permission", f"unknown permission {route.permission!r}"
        for position, entry_name in enumerate(route.entry_points):
            entry = config.entry_points.get(entry_name)
            if entry is None:
                yield f"{where}.entry_points[{position}]", f"unknown entry point {entry_name!r}"
            elif entry.via is not None and entry.via not in route.entry_points:
                yield (
                    f"{where}.entry_points[{position}]",
                    f"{entry_name!r} forwards to {entry.via!r}, so the route must be on it too",
                )
        if route.budget is not None and not any(
            route.budget.metric in metrics for metrics in config.budgets.plans.values()
        ):
            yield f"{where}.budget.metric", f"no budget plan limits {route.budget.metric!r}"
        readiness = {e.readiness_path for e in config.entry_points.values()}
        if route.match.path in readiness:
            yield f"{where}.match.path", f"{route.match.path} is the gateway's readiness route"


def _route_authorization(config: GatewayConfig, policy_dir: Path) -> Iterator[Problem]:
    """Routes that no principal could pass: ungranted permission, missing policy package."""
    packages: frozenset[str] | None = None
    for index, route in enumerate(config.routes):
        if route.public or route.permission not in config.permissions:
            continue  # public: nothing to authorize; unknown permission: reported already
        yield from _unreachable_entry_points(config, index, route)
        if route.policy is not None:
            packages = rego_packages(policy_dir) if packages is None else packages
            package = policy_package(route.policy)
            if package not in packages:
                found = ", ".join(sorted(packages)) or "none"
                yield (
                    f"routes[{index}].policy",
                    f"no Rego package {package!r} in {policy_dir} (defined: {found})",
                )


def _unreachable_entry_points(config: GatewayConfig, index: int, route: Route) -> Iterator[Problem]:
    permission = route.permission or ""
    if not _granted_anywhere(config, permission):
        yield f"routes[{index}].permission", f"permission {permission!r} is granted to no role"
        return
    for position, entry_name in enumerate(route.entry_points):
        entry = config.entry_points.get(entry_name)
        if entry is not None and not _holders(config, entry.gateway_type, permission):
            yield (
                f"routes[{index}].entry_points[{position}]",
                f"no {entry.gateway_type} role holds {permission!r}, so entry point "
                f"{entry_name!r} can never authorize the route",
            )
