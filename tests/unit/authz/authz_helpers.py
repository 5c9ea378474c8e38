"""Helpers of the authz unit tests: keys, issuers, a runtime config and fakes at the port seams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from authz_service.adapters.memory_budget import InProcessLedger
from authz_service.adapters.policy_evaluator import PolicyEvaluator
from authz_service.adapters.redis_budget import counter_key
from authz_service.adapters.static_keys import StaticKeySource
from authz_service.audit.journal import JournalUnavailableError
from authz_service.check_context import CheckContext
from authz_service.errors import DependencyUnavailableError
from authz_service.pipeline import FailOpen, Pipeline
from authz_service.ports import BudgetConsumption, BudgetWindow, KeySource
from authz_service.settings import IssuerConfig
from authz_service.tokens import TokenVerifier, TrustedIssuer
from gateway_contract.route_facts import RouteFacts
from gateway_contract.runtime import RuntimeConfig
from tests.support import issuers

# tests/support's issuers and keys, under the names these tests use
HS_ISSUER, RS_ISSUER = issuers.ISSUER, issuers.RS_ISSUER
AUDIENCE, SECRET = issuers.AUDIENCE, issuers.SECRET
RsaKey = issuers.RsaKey
POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"

RUNTIME = {
    "revision": "rev-1",
    "rbac": {
        "PLANT": {"admin": ["*"], "customer": ["orders:read"], "ops": ["orders:*"]},
        "CP": {"customer": ["orders:read"]},
        "PP": {},
    },
    "routes": {
        "orders-list": {
            "gateway_types": ["PLANT", "CP"],
            "methods": ["GET"],
            "path": {"prefix": "/api/v1/orders"},
            "permission": "orders:read",
            "policy": "gateway/authz",
            "budget": {"metric": "api_calls", "cost": 1},
        }
    },
    "budgets": {
        "plans": {
            "trial": {"api_calls": {"day": 3, "month": 10}},
            "standard": {"api_calls": {"day": 100, "month": 1000}},
        },
        "overrides": {
            "customers": {"cust-big": {"api_calls": {"day": 5000}}},
            "users": {"user-big": {"api_calls": {"day": 7000}}},
        },
    },
}


@pytest.fixture(scope="session", name="rsa_key")
def rsa_key_fixture() -> RsaKey:
    return issuers.rsa_key()


@pytest.fixture
def runtime_config() -> RuntimeConfig:
    return RuntimeConfig.model_validate(RUNTIME)


@pytest.fixture
def runtime_file(tmp_path: Path) -> Path:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(RUNTIME))
    return path


def hs_issuer() -> IssuerConfig:
    return IssuerConfig.model_validate(
        {
            "issuer": HS_ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["HS256"],
            "hs256_secret": SECRET,
        }
    )


def rs_issuer(public_pem: str) -> IssuerConfig:
    return IssuerConfig.model_validate(
        {
            "issuer": RS_ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256"],
            "public_key_pem": public_pem,
        }
    )


def _trusted(issuer: IssuerConfig, keys: KeySource) -> TrustedIssuer:
    """As wiring.py builds it from the settings."""
    return TrustedIssuer(issuer.issuer, issuer.audiences, issuer.algorithms, keys)


@pytest.fixture
def verifier(rsa_key: RsaKey) -> TokenVerifier:
    hs, rs = hs_issuer(), rs_issuer(rsa_key.public_pem)
    return TokenVerifier(
        {
            HS_ISSUER: _trusted(hs, StaticKeySource.from_hs256_secret(SECRET)),
            RS_ISSUER: _trusted(rs, StaticKeySource.from_pem(RS_ISSUER, rsa_key.public_pem)),
        },
        leeway_seconds=5,
        cache_size=100,
    )


def check_context(
    token: str | None = None,
    *,
    gateway_type: str = "PLANT",
    permission: str = "orders:read",
    policy: str = "gateway/authz",
    budget_metric: str = "api_calls",
    budget_cost: str = "1",
    paid_only: bool = False,
    headers: Mapping[str, str] | None = None,
) -> CheckContext:
    all_headers = {"x-request-id": "req-1", "x-correlation-id": "corr-1", **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    return CheckContext(
        request_id="req-1",
        correlation_id="corr-1",
        causation_id=None,
        method="GET",
        path="/api/v1/orders?page=2",
        headers=all_headers,
        route=RouteFacts.from_context_extensions(
            {
                "gateway_type": gateway_type,
                "route_id": "orders-list",
                "permission": permission,
                "policy": policy,
                "paid_only": "true" if paid_only else "false",
                "budget_metric": budget_metric,
                "budget_cost": budget_cost,
                "config_revision": "rev-1",
            }
        ),
        received_at=time.time(),
    )


@dataclass
class FakePolicyEngine:
    """Answers from a function of the input; can be made to fail like an unreachable OPA."""

    answer: dict[str, Any] | None = field(
        default_factory=lambda: {"allow": True, "reason": "allowed"}
    )
    down: bool = False
    calls: list[Mapping[str, Any]] = field(default_factory=list)

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        self.calls.append(input_doc)
        if self.down:
            raise DependencyUnavailableError("opa", "connection refused")
        return self.answer

    async def healthy(self) -> bool:
        return not self.down

    async def close(self) -> None:
        return None


@dataclass
class DownBudgetStore:
    counter_key = staticmethod(counter_key)

    async def consume(self, windows: Sequence[BudgetWindow], cost: int) -> BudgetConsumption:
        raise DependencyUnavailableError("redis", "connection refused")

    async def healthy(self) -> bool:
        return False

    async def close(self) -> None:
        return None


@dataclass
class RecordingJournal:
    """The AuditJournal seam: keeps the rows; `written` controls when a write completes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[bool] = field(default_factory=list)
    accepting: bool = True
    broken: bool = False  # record() raises, as a journal whose disk failed does
    written: asyncio.Future[None] | None = None  # None: every write completes at once

    def record(self, row: dict[str, Any], *, refusal: bool = False) -> Awaitable[None] | None:
        if self.broken:
            raise JournalUnavailableError("disk failed")
        self.rows.append(row)
        self.refusals.append(refusal)
        if self.written is not None:
            return self.written
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
def policy_engine() -> FakePolicyEngine:
    return FakePolicyEngine()


def make_pipeline(
    config: RuntimeConfig,
    verifier: TokenVerifier,
    engine: Any,
    store: Any = None,
    fail_open: FailOpen | None = None,
) -> Pipeline:
    evaluator = PolicyEvaluator(engine, cache_seconds=0, cache_size=0, headers=("user-agent",))
    return Pipeline(
        config,
        verifier,
        evaluator,
        store if store is not None else InProcessLedger(),
        max_token_bytes=4096,
        fail_open=fail_open or FailOpen(),
    )
