"""Starts everything the four configurations need, once, and describes each configuration."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.envoy_configs import FrontSpec, render_backend, render_front, route_facts
from bench.keys import AUDIENCE, ISSUER, BenchIssuer, new_issuer
from devstack import grpc_health
from devstack.ports import free_port, http_get
from devstack.process import ManagedProcess
from devstack.services import (
    provision_envoy,
    provision_opa,
    provision_postgres,
    provision_redis,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
ROUTE_ID = "orders-list"
PATH = "/api/v1/orders"
TOKENS = 50  # distinct principals the load rotates through


@dataclass
class Configuration:
    """One measured configuration: its front URL and the processes its requests cost."""

    key: str
    title: str
    url: str
    components: dict[str, list[int]]
    guarded: bool  # a request without a token must be refused


@dataclass
class Stack:
    workdir: Path
    issuer: BenchIssuer
    tokens: list[str]
    tokens_file: Path
    configurations: list[Configuration] = field(default_factory=list)
    authz_pids: dict[str, list[int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StackOptions:
    configurations: tuple[str, ...]
    authz_workers: int
    authz_transport: str  # "uds" | "tcp"
    front_concurrency: int


def _render(workdir: Path) -> tuple[Path, dict[str, Any]]:
    out = workdir / "render"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "render.py"),
            "--config",
            str(BENCH / "gateway.yaml"),
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    runtime = json.loads((out / "authz" / "runtime.json").read_text())
    return out, runtime


def _migrate(dsn: str, workdir: Path) -> None:
    with (workdir / "migrate.log").open("wb") as log:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=REPO,
            env={**os.environ, "AUTHZ_DATABASE_URL": dsn},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )


def _authz_workers(
    exits: contextlib.ExitStack, name: str, env: dict[str, str], opts: StackOptions, home: Path
) -> tuple[list[str], list[int]]:
    endpoints: list[str] = []
    pids: list[int] = []
    for index in range(opts.authz_workers):
        if opts.authz_transport == "uds":
            address = f"unix:{home / f'{name}-{index}.sock'}"
        else:
            address = f"127.0.0.1:{free_port()}"
        worker_env = {
            **os.environ,
            **env,
            "AUTHZ_GRPC_ADDRESS": address,
            "AUTHZ_AUDIT_SPOOL_DIR": str(home / f"{name}-{index}-spool"),
            "AUTHZ_METRICS_ADDRESS": "",
            "AUTHZ_LOG_LEVEL": "WARNING",
        }
        process = ManagedProcess(
            f"authz {name}-{index}",
            [sys.executable, "-m", "authz_service", "serve"],
            log_path=home / f"{name}-{index}.log",
            ready=lambda a=address: grpc_health.serving(a),  # type: ignore[misc]
            env=worker_env,
        )
        process.start()
        exits.callback(process.stop)
        assert process.pid is not None
        pids.append(process.pid)
        endpoints.append(address)
    return endpoints, pids


def _opa_envoy(
    exits: contextlib.ExitStack, home: Path, issuer: BenchIssuer, runtime: Any
) -> tuple[str, int]:
    policy_dir = home / "opa-envoy-policy"
    policy_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "opa_envoy" / "policy.rego", policy_dir / "policy.rego")
    data = {
        "bench": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_json": issuer.jwks_json,
            "rbac": runtime["rbac"],
        }
    }
    (policy_dir / "data.json").write_text(json.dumps(data))
    path = home / "opa-envoy.sock"
    address = f"unix:{path}"
    process = ManagedProcess(
        "opa-envoy",
        [str(REPO / ".cache" / "bin" / "opa-envoy"), "-addr", address, "-policy", str(policy_dir)],
        log_path=home / "opa-envoy.log",
        ready=lambda: _accepts(path),
    )
    process.start()
    exits.callback(process.stop)
    assert process.pid is not None
    return address, process.pid


def _accepts(path: Path) -> bool:
    """opa-envoy has no health service: ready once its socket accepts a connection."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def _front(
    exits: contextlib.ExitStack,
    home: Path,
    spec: FrontSpec,
    backend_port: int,
    route: Any,
    concurrency: int,
) -> int:
    config = render_front(
        home / f"front-{spec.name}.yaml", spec, backend_port=backend_port, route=route
    )
    envoy = exits.enter_context(
        provision_envoy(
            home, config, name=f"front-{spec.name}", concurrency=concurrency, provider="local"
        )
    )
    assert envoy.pid is not None
    return envoy.pid


@contextlib.contextmanager
def bench_stack(workdir: Path, opts: StackOptions) -> Iterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)
    issuer = new_issuer()
    tokens = [issuer.token(user) for user in range(TOKENS)]
    tokens_file = workdir / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    stack = Stack(workdir, issuer, tokens, tokens_file)
    render_dir, runtime = _render(workdir)
    route = route_facts(render_dir, runtime, ROUTE_ID)
    route.update(issuer=ISSUER, audience=AUDIENCE, jwks_json=issuer.jwks_json)
    wanted = set(opts.configurations)
    with contextlib.ExitStack() as exits:
        backend_port = free_port()
        backend_config = render_backend(
            workdir / "backend.yaml",
            port=backend_port,
            admin_port=free_port(),
            jwks_json=issuer.jwks_json,
        )
        backend = exits.enter_context(
            provision_envoy(
                workdir, backend_config, name="backend", concurrency=1, provider="local"
            )
        )
        assert backend.pid is not None
        base = {"backend": [backend.pid]}
        jwks_url = f"http://127.0.0.1:{backend_port}/.well-known/jwks.json"
        assert http_get(jwks_url)[0] == 200

        def add(
            key: str, title: str, spec: FrontSpec, extra: dict[str, list[int]], guarded: bool
        ) -> None:
            pid = _front(exits, workdir, spec, backend_port, route, opts.front_concurrency)
            stack.configurations.append(
                Configuration(
                    key,
                    title,
                    f"http://127.0.0.1:{spec.port}{PATH}",
                    {"envoy": [pid], **base, **extra},
                    guarded,
                )
            )

        if "envoy" in wanted:
            add(
                "envoy",
                "(1) Envoy → backend, no authorization",
                FrontSpec("envoy", "none", free_port(), free_port()),
                {},
                guarded=False,
            )
        authz_keys = wanted & {"authz-embedded", "authz-opa"}
        if authz_keys:
            pg = exits.enter_context(provision_postgres(workdir, provider="local"))
            _migrate(pg.dsn, workdir)
            redis = exits.enter_context(provision_redis(workdir, provider="local"))
            assert pg.pid is not None
            assert redis.pid is not None
            issuers = [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "algorithms": ["RS256"],
                    "jwks_url": jwks_url,
                }
            ]
            env = {
                "AUTHZ_RUNTIME_CONFIG": str(render_dir / "authz" / "runtime.json"),
                "AUTHZ_JWT_ISSUERS": json.dumps(issuers),
                "AUTHZ_POLICY_DIR": str(REPO / "policies"),
                "AUTHZ_REDIS_URL": redis.url,
                "AUTHZ_DATABASE_URL": pg.dsn,
            }
            shared = {"redis": [redis.pid], "postgres": [pg.pid]}
            stack.info["authz_workers"] = opts.authz_workers
            stack.info["authz_transport"] = opts.authz_transport
            if "authz-embedded" in wanted:
                endpoints, pids = _authz_workers(exits, "embedded", env, opts, workdir)
                stack.authz_pids["authz-embedded"] = pids
                add(
                    "authz-embedded",
                    "(2a) Envoy → authz_service, full pipeline, embedded policy engine (regopy)",
                    FrontSpec(
                        "authz-embedded",
                        "ext_authz",
                        free_port(),
                        free_port(),
                        tuple(endpoints),
                        access_log_to_authz=True,
                    ),
                    {"authz": pids, **shared},
                    guarded=True,
                )
            if "authz-opa" in wanted:
                opa = exits.enter_context(
                    provision_opa(workdir, REPO / "policies", provider="local")
                )
                assert opa.pid is not None
                endpoints, pids = _authz_workers(
                    exits, "opa", {**env, "AUTHZ_OPA_URL": opa.url}, opts, workdir
                )
                stack.authz_pids["authz-opa"] = pids
                add(
                    "authz-opa",
                    "(2b) Envoy → authz_service, full pipeline, OPA server policy",
                    FrontSpec(
                        "authz-opa",
                        "ext_authz",
                        free_port(),
                        free_port(),
                        tuple(endpoints),
                        access_log_to_authz=True,
                    ),
                    {"authz": pids, "opa": [opa.pid], **shared},
                    guarded=True,
                )
        if "opa-envoy" in wanted:
            address, pid = _opa_envoy(exits, workdir, issuer, runtime)
            add(
                "opa-envoy",
                "(3) Envoy → OPA-Envoy ext_authz (Rego: JWT RS256/JWKS + RBAC)",
                FrontSpec("opa-envoy", "ext_authz", free_port(), free_port(), (address,)),
                {"opa-envoy": [pid]},
                guarded=True,
            )
        if "native" in wanted:
            add(
                "native",
                "(4) Envoy jwt_authn + rbac filters, no ext_authz",
                FrontSpec("native", "native", free_port(), free_port()),
                {},
                guarded=True,
            )
        order = {key: i for i, key in enumerate(opts.configurations)}
        stack.configurations.sort(key=lambda c: order[c.key])
        yield stack
