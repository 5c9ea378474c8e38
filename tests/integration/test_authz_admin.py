"""The admin API in-process with the real OPA and Redis: Explain = Check, Budget, Reload."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings

from authz_service import admin_cli
from authz_service._proto.gateway.admin.v1 import admin_pb2 as pb
from authz_service._proto.gateway.admin.v1 import admin_pb2_grpc as pb_grpc
from authz_service.settings import Settings
from devstack import OpaService, RedisService
from tests.authz_explain_cases import RUNTIME, Case, cases, check_request, expected_route, token_for
from tests.support import servers
from tests.support.free_ports import free_port
from tests.support.issuers import AUDIENCE, ISSUER, SECRET, hs256_token
from tests.support.servers import service_settings
from tests.support.waiting import eventually_async

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@dataclass
class Running:
    check: ext_grpc.AuthorizationStub
    admin: pb_grpc.GatewayAdminStub
    runtime: Path
    policies: Path
    address: str


def _settings(tmp_path: Path, policies: Path, **extra: Any) -> Settings:
    return service_settings(
        tmp_path,
        RUNTIME,
        admin_address=f"127.0.0.1:{free_port()}",
        policy_dir=policies,
        policy_cache_seconds=0,
        shutdown_grace_seconds=1,
        **extra,
    )


async def _serve(settings: Settings, policies: Path) -> AsyncIterator[Running]:
    async with (
        servers.serving(settings),
        grpc.aio.insecure_channel(settings.grpc_address) as checks,
        grpc.aio.insecure_channel(settings.admin_address) as admin,
    ):
        yield Running(
            ext_grpc.AuthorizationStub(checks),
            pb_grpc.GatewayAdminStub(admin),  # type: ignore[no-untyped-call]
            settings.runtime_config,
            policies,
            settings.admin_address,
        )


@pytest.fixture
async def with_opa(
    tmp_path: Path, redis_service: RedisService, opa_service: OpaService
) -> AsyncIterator[Running]:
    settings = _settings(tmp_path, POLICY_DIR, opa_url=opa_service.url, redis_url=redis_service.url)
    async for running in _serve(settings, POLICY_DIR):
        yield running


@pytest.fixture
async def embedded(tmp_path: Path, redis_service: RedisService) -> AsyncIterator[Running]:
    """regopy on a copy of policies/ that the test may edit, and the real Redis."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policies)
    settings = _settings(tmp_path, policies, redis_url=redis_service.url)
    async for running in _serve(settings, policies):
        yield running


def _token(roles: tuple[str, ...] = ("customer",), customer: str | None = None) -> str:
    customer = customer or f"cust-{uuid.uuid4().hex[:8]}"
    return hs256_token("u-" + customer, roles, customer)


def _explain_request(token: str, method: str, path: str, gateway: str = "PLANT") -> Any:
    return pb.ExplainRequest(token=token, gateway_type=gateway, method=method, path=path)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases)
async def test_explain_matches_check_with_real_opa_and_redis(with_opa: Running, case: Case) -> None:
    token = token_for(case, SECRET, ISSUER, AUDIENCE)
    request = pb.ExplainRequest(gateway_type=case.gateway_type, method=case.method, path=case.path)
    if token is not None:
        request.token = token
    explained = await with_opa.admin.Explain(request, timeout=5)
    route = expected_route(case)
    assert explained.route_id == (route or "")
    if route is None or RUNTIME["routes"][route].get("public"):
        assert explained.allowed is (route is not None)
        return
    response = await with_opa.check.Check(check_request(case, route, token), timeout=5)
    assert explained.allowed is (response.status.code == 0)
    if not explained.allowed:
        assert explained.status == response.denied_response.status.code
        assert [s.code for s in explained.stages if s.outcome == "deny"][-1] == (
            response.dynamic_metadata["code"]
        )


async def test_explain_consumes_no_budget_and_budget_reports_usage(with_opa: Running) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    token = _token(customer=customer)
    for _ in range(3):
        explained = await with_opa.admin.Explain(
            _explain_request(token, "GET", "/api/v1/orders"), timeout=5
        )
        assert explained.allowed
    stages = {s.stage: json_format.MessageToDict(s.data) for s in explained.stages}
    assert stages["budget"]["budget"]["used_after"] == 1  # nothing was consumed before
    case = Case("PLANT", "GET", "/api/v1/orders", ("customer",), customer, False, False, True)
    assert (await with_opa.check.Check(check_request(case, "orders-list", token))).status.code == 0
    reply = await with_opa.admin.Budget(pb.BudgetRequest(subject=f"customer:{customer}"), timeout=5)
    windows = {(w.metric, w.window): w for w in reply.windows}
    calls = windows[("api_calls", "day")]
    assert (calls.used, calls.limit, calls.remaining) == (1, 1000, 999)
    assert 0 < calls.resets_in_seconds <= 86_400
    # the same id as a user is another subject, with nothing used
    user = await with_opa.admin.Budget(pb.BudgetRequest(subject=f"user:{customer}"), timeout=5)
    assert {(w.metric, w.window): w.used for w in user.windows}[("api_calls", "day")] == 0


@pytest.mark.parametrize("subject", ["", "cust-1", "team:cust-1", "customer:"])
async def test_budget_needs_a_subject_kind(with_opa: Running, subject: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await with_opa.admin.Budget(pb.BudgetRequest(subject=subject), timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "customer:<id> or user:<id>" in (raised.value.details() or "")


async def test_raw_claims_need_the_development_setting(with_opa: Running) -> None:
    request = pb.ExplainRequest(gateway_type="PLANT", method="GET", path="/api/v1/orders")
    request.claims.update({"sub": "u1", "roles": ["customer"]})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await with_opa.admin.Explain(request, timeout=5)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_reload_rejects_a_bad_policy_and_applies_a_good_revision(embedded: Running) -> None:
    token = _token(roles=("guest",))
    explain = _explain_request(token, "GET", "/api/v1/orders")
    before = await embedded.admin.Explain(explain, timeout=5)
    assert (before.allowed, before.status) == (False, 403)
    policy = embedded.policies / "gateway" / "authz.rego"
    good = policy.read_text()
    policy.write_text(good + "\nallow if {\n")  # does not parse
    rejected = await embedded.admin.Reload(pb.ReloadRequest(), timeout=10)
    assert not rejected.applied
    assert "authz.rego" in rejected.error
    assert rejected.policy_revision == before.policy_revision  # the old one stays
    # a role gains the permission, and the policy now refuses everything with a reason
    runtime = json.loads(embedded.runtime.read_text())
    runtime["revision"] = "prop-2"
    runtime["rbac"]["PLANT"]["guest"] = ["orders:read"]
    embedded.runtime.write_text(json.dumps(runtime))
    refuse_all = good.replace("not paid_only\n}", "not paid_only\n\tfalse\n}")
    policy.write_text(refuse_all.replace('reason := "allowed"', 'reason := "maintenance"'))
    applied = await embedded.admin.Reload(pb.ReloadRequest(), timeout=10)
    assert (applied.applied, applied.error, applied.config_revision) == (True, "", "prop-2")
    assert applied.policy_revision != before.policy_revision
    after = await embedded.admin.Explain(explain, timeout=5)
    assert (after.allowed, after.status, after.policy_revision) == (
        False, 403, applied.policy_revision
    )  # fmt: skip
    assert [(s.stage, s.outcome, s.code) for s in after.stages][1:3] == [
        ("authorize", "allow", ""), ("policy", "deny", "policy_denied")
    ]  # fmt: skip
    # SIGHUP reloads too: back to the original policy
    policy.write_text(good)
    os.kill(os.getpid(), signal.SIGHUP)

    async def reloaded() -> pb.ExplainResponse | None:
        explained = await embedded.admin.Explain(explain, timeout=5)
        return explained if explained.policy_revision == before.policy_revision else None

    final = await eventually_async(reloaded, 10, what="the SIGHUP reload")
    assert (final.allowed, final.policy_revision) == (True, before.policy_revision)


async def test_cli_prints_a_readable_trace(
    with_opa: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    address = with_opa.address
    token = _token(roles=("guest",))
    argv = ["--admin-address", address, "explain", "--token", token, "GET", "/api/v1/orders"]
    assert await asyncio.to_thread(admin_cli.main, argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "DENIED 403  route=orders-list"
    assert "✗ authorize    deny [permission_denied]" in printed
    assert 'permission_needed: "orders:read"' in printed
    assert await asyncio.to_thread(admin_cli.main, ["--admin-address", address, "reload"]) == 0
    assert capsys.readouterr().out.startswith("reload applied")


async def test_reload_refuses_checks_larger_than_the_http_transport_takes(
    tmp_path: Path, redis_service: RedisService
) -> None:
    """A re-rendered config whose Envoy may send bigger check heads than AUTHZ_HTTP_MAX_HEAD_BYTES
    is refused like a bad policy: the HTTP transport would answer those requests with its own
    431 (no decision, no audit reason); the running revision stays."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policies)
    http = f"127.0.0.1:{free_port()}"
    settings = _settings(
        tmp_path, policies, redis_url=redis_service.url, http_address=http,
        http_max_head_bytes=64 * 1024,
    )  # fmt: skip
    async for running in _serve(settings, policies):
        runtime = json.loads(running.runtime.read_text())
        for revision, head_bytes, applied in [
            ("big", 64 * 1024 + 1, False),
            ("fits", 64 * 1024, True),
        ]:
            runtime["revision"], runtime["max_check_head_bytes"] = revision, head_bytes
            running.runtime.write_text(json.dumps(runtime))
            reply = await running.admin.Reload(pb.ReloadRequest(), timeout=10)
            assert reply.applied is applied, reply.error
            assert ("AUTHZ_HTTP_MAX_HEAD_BYTES" in reply.error) is not applied
            assert reply.config_revision == (revision if applied else RUNTIME["revision"])
