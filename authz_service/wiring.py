"""Builds the pipeline's adapters from Settings: key sources, policy engine, budget store, audit."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from authz_service.adapters.budget_lease import leased
from authz_service.adapters.jwks import JwksKeySource
from authz_service.adapters.memory_budget import InProcessLedger
from authz_service.adapters.opa_http import OpaHttpEngine
from authz_service.adapters.policy_evaluator import PolicyEvaluator
from authz_service.adapters.redis_budget import RedisBudgetStore
from authz_service.adapters.regopy_engine import RegopyEngine
from authz_service.adapters.static_keys import StaticKeySource
from authz_service.health import HealthBoard
from authz_service.pipeline import FailOpen, Pipeline
from authz_service.ports import BudgetStore, KeySource, PolicyEngine
from authz_service.reload import Reloader, policy_revision
from authz_service.settings import IssuerConfig, Settings
from authz_service.tokens import TokenVerifier, TrustedIssuer
from gateway_contract.runtime import (
    check_http_head_limit,
    check_policy_headers,
    load_runtime_config,
)

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything the server owns and must close on shutdown."""

    pipeline: Pipeline
    policy_engine: PolicyEngine
    budget_store: BudgetStore
    key_sources: list[KeySource]
    reloader: Reloader
    http_session: aiohttp.ClientSession | None = None
    health_probes: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    health: HealthBoard = field(default_factory=HealthBoard)

    async def close(self) -> None:
        await self.reloader.close()
        await self.pipeline.policy.engine.close()  # the current one: a reload may have swapped it
        await self.budget_store.close()
        for source in self.key_sources:
            await source.close()
        if self.http_session is not None:
            await self.http_session.close()


def _key_source(
    issuer: IssuerConfig, settings: Settings, session: aiohttp.ClientSession | None
) -> KeySource:
    if issuer.hs256_secret is not None:
        return StaticKeySource.from_hs256_secret(issuer.hs256_secret.get_secret_value())
    if issuer.public_key_pem is not None:
        return StaticKeySource.from_pem(issuer.issuer, issuer.public_key_pem)
    if issuer.jwks is not None:
        return StaticKeySource.from_jwks(issuer.issuer, issuer.jwks)
    assert issuer.jwks_url is not None
    assert session is not None
    return JwksKeySource(
        issuer.issuer,
        issuer.jwks_url,
        session,
        timeout_seconds=settings.jwks_timeout_seconds,
        cache_seconds=settings.jwks_cache_seconds,
        min_refresh_seconds=settings.jwks_min_refresh_seconds,
        retain_seconds=settings.jwks_retain_seconds,
    )


def build_components(settings: Settings) -> Components:
    """Must run inside the event loop (the HTTP session and Redis pool belong to it)."""
    config = load_runtime_config(settings.runtime_config)
    check_policy_headers(settings.runtime_config, config, settings.policy_headers)
    if settings.http_address:
        check_http_head_limit(settings.runtime_config, config, settings.http_max_head_bytes)
    session = aiohttp.ClientSession() if any(i.jwks_url for i in settings.jwt_issuers) else None
    issuers = {
        i.issuer: TrustedIssuer(
            i.issuer, i.audiences, i.algorithms, _key_source(i, settings, session)
        )
        for i in settings.jwt_issuers
    }
    verifier = TokenVerifier(
        issuers,
        leeway_seconds=settings.jwt_leeway_seconds,
        cache_size=settings.token_cache_size,
        max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
    )
    engine: PolicyEngine
    if settings.opa_url:
        engine = OpaHttpEngine(
            settings.opa_url,
            timeout_seconds=settings.opa_timeout_seconds,
            pool_size=settings.opa_pool_size,
        )
    else:
        engine = RegopyEngine(settings.policy_dir, config.policy_paths())
    store: BudgetStore
    if settings.redis_url:
        store = leased(
            RedisBudgetStore(
                settings.redis_url,
                timeout_seconds=settings.redis_timeout_seconds,
                max_clock_skew_seconds=settings.budget_max_clock_skew_seconds,
            ),
            max_units=settings.budget_lease_max_units,
            seconds=settings.budget_lease_seconds,
        )
    else:
        log.warning(
            "AUTHZ_REDIS_URL is empty: budgets use an in-process ledger (one instance only)"
        )
        store = InProcessLedger()
    evaluator = PolicyEvaluator(
        engine,
        cache_seconds=settings.policy_cache_seconds,
        cache_size=settings.policy_cache_size,
        headers=settings.policy_headers,
        revision=policy_revision(settings.policy_dir),
    )
    pipeline = Pipeline(
        config,
        verifier,
        evaluator,
        store,
        max_token_bytes=settings.max_token_bytes,
        fail_open=FailOpen(policy=settings.policy_fail_open, budget=settings.budget_fail_open),
    )
    log.info(
        "runtime config loaded", extra={"revision": config.revision, "routes": len(config.routes)}
    )
    reloader = Reloader(
        pipeline,
        settings.runtime_config,
        settings.policy_dir,
        embedded=not settings.opa_url,
        retire_after_seconds=settings.check_timeout_seconds + 5,
        engine_factory=RegopyEngine,
        http_max_head_bytes=settings.http_max_head_bytes if settings.http_address else None,
    )

    async def policy_healthy() -> bool:
        return await evaluator.engine.healthy()

    return Components(
        pipeline,
        engine,
        store,
        [issuer.keys for issuer in issuers.values()],
        reloader,
        session,
        health_probes={"authz.opa": policy_healthy, "authz.redis": store.healthy},
    )
