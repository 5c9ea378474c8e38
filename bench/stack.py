"""Starts everything the configurations need, once, and describes each configuration."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import processes
from bench.envoy_configs import FrontSpec, render_backend, route_facts
from bench.keys import AUDIENCE, ISSUER, BenchIssuer, new_issuer
from bench.processes import REPO
from devstack.free_ports import free_port
from devstack.launcher import Component, LaunchSpec, launch
from devstack.probes import http_get
from devstack.provision import Provisioned
from devstack.services import provision_envoy

ROUTE_ID = "orders-list"
PATH = "/api/v1/orders"
TOKENS = 50  # distinct principals the load rotates through

__all__ = ["REPO", "Configuration", "Stack", "StackOptions", "bench_stack"]


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
    metrics_urls: dict[str, list[str]] = field(default_factory=dict)  # variant -> /metrics
    shipper_health: dict[str, str] = field(default_factory=dict)  # configuration -> /health


@dataclass(frozen=True)
class StackOptions:
    configurations: tuple[str, ...]
    authz_workers: int
    authz_transport: str  # "uds" | "tcp"
    front_concurrency: int
    access_log: bool = True  # Envoy writes the audit access log the shipper tails (completions)
    authz_env: tuple[tuple[str, str], ...] = ()  # extra AUTHZ_* settings for (2a)/(2b) workers


class _Builder:
    """Adds configurations to the stack; every process it starts stops with `exits`."""

    def __init__(self, stack: Stack, opts: StackOptions, exits: contextlib.ExitStack) -> None:
        self.stack, self.opts, self.exits = stack, opts, exits
        self.database: Provisioned | None = None
        self.workdir = stack.workdir
        self.render_dir, self.runtime = processes.render(self.workdir)
        self.route = route_facts(self.render_dir, self.runtime, ROUTE_ID)
        jwks = stack.issuer.jwks_json
        self.route.update(issuer=ISSUER, audience=AUDIENCE, jwks_json=jwks)
        self.backend_port = free_port()
        config = render_backend(
            self.workdir / "backend.yaml",
            port=self.backend_port,
            admin_port=free_port(),
            jwks_json=jwks,
        )
        backend = exits.enter_context(
            provision_envoy(self.workdir, config, name="backend", concurrency=1, provider="local")
        )
        assert backend.pid is not None
        self.backend_pid = backend.pid
        self.jwks_url = f"http://127.0.0.1:{self.backend_port}/.well-known/jwks.json"
        assert http_get(self.jwks_url)[0] == 200

    def add(self, key: str, title: str, spec: FrontSpec, extra: dict[str, list[int]]) -> None:
        pid = processes.front(
            self.exits,
            self.workdir,
            spec,
            self.backend_port,
            self.route,
            self.opts.front_concurrency,
        )
        components = {"envoy": [pid], "backend": [self.backend_pid], **extra}
        url = f"http://127.0.0.1:{spec.port}{PATH}"
        self.stack.configurations.append(
            Configuration(
                key, title, url, components, guarded=spec.mode != "none" and "noop" not in key
            )
        )

    def front(
        self, name: str, mode: str, endpoints: tuple[str, ...] = (), log: Path | None = None
    ) -> FrontSpec:
        return FrontSpec(name, mode, free_port(), free_port(), endpoints, access_log=log)

    def workers(
        self, name: str, env: dict[str, str], module: tuple[str, ...]
    ) -> tuple[tuple[str, ...], list[int]]:
        started = processes.authz_workers(
            self.exits,
            name,
            env,
            self.opts.authz_workers,
            self.opts.authz_transport,
            self.workdir,
            module=module,
        )
        if started.metrics_urls:
            self.stack.metrics_urls[f"authz-{name}"] = started.metrics_urls
        return tuple(started.endpoints), started.pids

    def audited(self, key: str, name: str) -> tuple[Path | None, list[int]]:
        """The variant's access log and its shipper (journals + log into PostgreSQL)."""
        log = self.workdir / f"access-{key}.log" if self.opts.access_log else None
        assert self.database is not None
        pid, health = processes.shipper(self.exits, name, self.database, self.workdir, log)
        self.stack.shipper_health[key] = health
        return log, [pid]

    def authz(self, wanted: set[str]) -> None:
        """(2a), (2b), (2c): the real service, with PostgreSQL and Redis (and OPA for (2b))
        started by devstack's launcher as `make up` starts them, shared by every variant."""
        datastores: set[Component] = {"postgres", "redis"}
        if "authz-opa" in wanted:
            datastores.add("opa")
        only_datastores = LaunchSpec(
            var_dir=self.workdir / "datastores", build_dir=self.render_dir, ports={},
            components=frozenset(datastores), provider="local",
        )  # fmt: skip
        launched = self.exits.enter_context(launch(only_datastores))
        self.database = launched.datastores.database
        pg, redis = launched.parts["postgres"].pid, launched.parts["redis"].pid
        assert pg is not None
        assert redis is not None
        issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"]}
        env = {
            "AUTHZ_RUNTIME_CONFIG": str(self.render_dir / "authz" / "runtime.json"),
            "AUTHZ_JWT_ISSUERS": json.dumps([{**issuer, "jwks_url": self.jwks_url}]),
            "AUTHZ_POLICY_DIR": str(REPO / "policies"),
            "AUTHZ_REDIS_URL": launched.datastores.redis_url,
            # a process crash loses nothing (the page cache has it); the default of issue 14
            "AUTHZ_AUDIT_FSYNC": "off",
            **dict(self.opts.authz_env),
        }
        shared = {"redis": [redis], "postgres": [pg]}
        serve = ("authz_service", "serve")
        if "authz-embedded" in wanted:
            endpoints, pids = self.workers("embedded", env, serve)
            self.stack.authz_pids["authz-embedded"] = pids
            log, shipper = self.audited("authz-embedded", "embedded")
            spec = self.front("authz-embedded", "ext_authz", endpoints, log)
            title = "(2a) Envoy → authz_service, full pipeline, embedded policy engine (regopy)"
            parts = {"authz": pids, "shipper": shipper, **shared}
            self.add("authz-embedded", title, spec, parts)
        if "authz-http" in wanted:
            workers = processes.authz_http(
                self.exits, "http", env, self.opts.authz_workers, self.workdir
            )
            self.stack.authz_pids["authz-http"] = workers.pids
            self.stack.metrics_urls["authz-http"] = workers.metrics_urls
            log, shipper = self.audited("authz-http", "http")
            spec = self.front("authz-http", "ext_authz_http", tuple(workers.endpoints), log)
            title = (
                f"(2c) Envoy → authz_service over HTTP, {self.opts.authz_workers} workers, "
                "full pipeline, embedded policy engine"
            )
            parts = {"authz": workers.pids, "shipper": shipper, **shared}
            self.add("authz-http", title, spec, parts)
        if "authz-opa" in wanted:
            opa = launched.parts["opa"].pid
            assert opa is not None
            opa_url = launched.datastores.opa_url
            endpoints, pids = self.workers("opa", {**env, "AUTHZ_OPA_URL": opa_url}, serve)
            self.stack.authz_pids["authz-opa"] = pids
            log, shipper = self.audited("authz-opa", "opa")
            spec = self.front("authz-opa", "ext_authz", endpoints, log)
            title = "(2b) Envoy → authz_service, full pipeline, OPA server policy"
            parts = {"authz": pids, "opa": [opa], "shipper": shipper, **shared}
            self.add("authz-opa", title, spec, parts)

    def build(self) -> None:
        wanted = set(self.opts.configurations)
        if "envoy" in wanted:
            self.add(
                "envoy", "(1) Envoy → backend, no authorization", self.front("envoy", "none"), {}
            )
        if wanted & {"authz-embedded", "authz-opa", "authz-http"}:
            self.stack.info.update(
                authz_workers=self.opts.authz_workers, authz_transport=self.opts.authz_transport
            )
            self.authz(wanted)
        if "opa-envoy" in wanted:
            address, pid = processes.opa_envoy(
                self.exits, self.workdir, self.stack.issuer, self.runtime
            )
            title = "(3) Envoy → the OPA-Envoy plugin (Rego: JWT RS256/JWKS + RBAC)"
            spec = self.front("opa-envoy", "ext_authz", (address,))
            self.add("opa-envoy", title, spec, {"opa-envoy": [pid]})
        if "http-noop" in wanted:
            address, pids = processes.http_noop(self.exits, self.workdir, self.opts.authz_workers)
            title = "(0b) Envoy → bare asyncio + httptools HTTP allow-all (calibration)"
            spec = self.front("http-noop", "ext_authz_http", (address,))
            self.add("http-noop", title, spec, {"authz": pids})
        if "python-noop" in wanted:
            endpoints, pids = self.workers("noop", {}, ("bench.noop_authz",))
            title = "(0) Envoy → bare grpc.aio Check that always allows (calibration)"
            spec = self.front("python-noop", "ext_authz", endpoints)
            self.add("python-noop", title, spec, {"authz": pids})
        if "native" in wanted:
            title = "(4) Envoy jwt_authn + rbac filters, no ext_authz"
            self.add("native", title, self.front("native", "native"), {})
        order = {key: i for i, key in enumerate(self.opts.configurations)}
        self.stack.configurations.sort(key=lambda c: order[c.key])


@contextlib.contextmanager
def bench_stack(workdir: Path, opts: StackOptions) -> Iterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)
    issuer = new_issuer()
    tokens = [issuer.token(user) for user in range(TOKENS)]
    tokens_file = workdir / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    stack = Stack(workdir, issuer, tokens, tokens_file)
    with contextlib.ExitStack() as exits:
        _Builder(stack, opts, exits).build()
        yield stack
