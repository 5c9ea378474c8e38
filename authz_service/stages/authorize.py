"""Stage 2: RBAC — the principal's roles on this gateway type must grant the route's permission."""

from __future__ import annotations

from authz_service.check_context import CheckContext
from authz_service.errors import Denial, ErrorCode, Stage
from authz_service.principal import Principal
from gateway_contract.runtime import GatewayType, RuntimeConfig


def _grants(granted: frozenset[str], permission: str) -> bool:
    if "*" in granted or permission in granted:
        return True
    # "orders:*" grants every "orders:<action>"
    resource, _, _ = permission.partition(":")
    return f"{resource}:*" in granted


async def authorize(
    check: CheckContext, principal: Principal, config: RuntimeConfig
) -> Denial | None:
    try:
        gateway_type = GatewayType(check.route.gateway_type)
    except ValueError:
        return Denial(
            ErrorCode.ROUTE_MISCONFIGURED,
            Stage.AUTHORIZE,
            "the route sends no valid gateway_type",
        )
    permission = check.route.permission
    if not permission:
        return Denial(
            ErrorCode.ROUTE_MISCONFIGURED, Stage.AUTHORIZE, "the route sends no permission"
        )
    if _grants(config.permissions_of(gateway_type, principal.roles), permission):
        return None
    return Denial(
        ErrorCode.PERMISSION_DENIED,
        Stage.AUTHORIZE,
        f"permission {permission!r} is required on the {gateway_type.value} gateway",
        extensions={"permission": permission, "gateway_type": gateway_type.value},
    )
