"""Stage 2: roles grant permissions per gateway type; a refusal names the missing permission."""

from __future__ import annotations

import time

import pytest

from authz_service.errors import Denial, ErrorCode
from authz_service.principal import Principal
from authz_service.stages.authorize import authorize
from gateway_contract.runtime import RuntimeConfig
from tests.unit.authz.authz_helpers import check_context


def _principal(*roles: str) -> Principal:
    return Principal("u", None, roles, False, None, "standard", None, "iss", time.time() + 60)


@pytest.mark.parametrize(
    ("gateway", "roles", "permission"),
    [
        ("PLANT", ("customer",), "orders:read"),
        ("PLANT", ("admin",), "anything:at-all"),
        ("PLANT", ("ops",), "orders:cancel"),
        ("PLANT", ("nobody", "customer"), "orders:read"),
        ("CP", ("customer",), "orders:read"),
    ],
)
async def test_granted(
    runtime_config: RuntimeConfig, gateway: str, roles: tuple[str, ...], permission: str
) -> None:
    ctx = check_context(gateway_type=gateway, permission=permission)
    assert await authorize(ctx, _principal(*roles), runtime_config) is None


@pytest.mark.parametrize(
    ("gateway", "roles", "permission"),
    [
        ("PLANT", ("customer",), "orders:write"),
        ("PLANT", ("ops",), "invoices:read"),
        ("PP", ("customer",), "orders:read"),  # the PP table grants nothing
        ("CP", ("admin",), "orders:read"),  # admin is a PLANT role only
        ("PLANT", (), "orders:read"),
    ],
)
async def test_refused_with_the_permission_named(
    runtime_config: RuntimeConfig, gateway: str, roles: tuple[str, ...], permission: str
) -> None:
    ctx = check_context(gateway_type=gateway, permission=permission)
    denial = await authorize(ctx, _principal(*roles), runtime_config)
    assert isinstance(denial, Denial)
    assert denial.code is ErrorCode.PERMISSION_DENIED
    assert denial.status == 403
    assert permission in denial.detail
    assert denial.extensions["permission"] == permission


@pytest.mark.parametrize(
    ("gateway", "permission"), [("", "orders:read"), ("XX", "orders:read"), ("CP", "")]
)
async def test_route_without_context_fails_closed(
    runtime_config: RuntimeConfig, gateway: str, permission: str
) -> None:
    ctx = check_context(gateway_type=gateway, permission=permission)
    denial = await authorize(ctx, _principal("admin"), runtime_config)
    assert isinstance(denial, Denial)
    assert denial.code is ErrorCode.ROUTE_MISCONFIGURED
    assert denial.status == 503
