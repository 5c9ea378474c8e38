"""Runs the measurements: checks each configuration, then interleaves the runs round by round."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat, service_metrics
from bench.keys import new_issuer
from bench.load import LoadResult, vegeta_rate, write_vegeta_targets, wrk_saturation
from bench.stack import Configuration, Stack

SATURATION = "saturation"


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float
    rates: tuple[int, ...]
    connections: int
    memory_seconds: float
    memory_rate: int
    memory_config: str


@dataclass
class RunRecord:
    config: str
    kind: str  # "saturation" or "rate-<n>"
    round: int
    load: LoadResult
    cpu_s: dict[str, float]
    rss: dict[str, int]
    service: dict[str, Any] | None = None  # the authz workers' own figures for this run

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["load"]["rps"] = self.load.rps
        data["load"]["ok"] = self.load.ok
        requests = max(1, self.load.requests)
        data["cpu_us_per_request"] = {k: v * 1e6 / requests for k, v in self.cpu_s.items()}
        data["cpu_us_per_request"]["loadgen"] = self.load.loadgen_cpu_s * 1e6 / requests
        return data


@dataclass
class MemoryTrace:
    config: str
    rate: int
    seconds: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (t, rss bytes)
    load: LoadResult | None = None


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def verify(stack: Stack) -> list[str]:
    """Each configuration answers a valid token with 200 and, when guarded, refuses others."""
    stranger = new_issuer().token(1)
    problems = []
    for config in stack.configurations:
        got = _status(config.url, stack.tokens[0])
        if got != 200:
            problems.append(f"{config.key}: a valid token got {got}, expected 200")
        if config.guarded:
            for label, token in (("no token", None), ("a token of another key", stranger)):
                got = _status(config.url, token)
                if got not in (401, 403):
                    problems.append(f"{config.key}: {label} got {got}, expected 401/403")
    return problems


SHIPPED_WAIT_S = 120.0  # bounded: a saturation run's backlog drains in seconds


def _shipped(health: str | None) -> None:
    """Until the audit shipper has nothing left to write (twice, a backlog scan apart): a run
    neither competes with the previous run's shipping nor leaves its own uncounted."""
    if health is None:
        return
    deadline, calm = time.monotonic() + SHIPPED_WAIT_S, 0
    while calm < 2 and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                state = json.loads(response.read())
        except (OSError, ValueError):
            state = {}
        idle = state.get("backlog_bytes") == 0 and state.get("held_decisions") == 0
        calm = calm + 1 if idle else 0
        time.sleep(1.1)


def _measure(
    config: Configuration,
    kind: str,
    round_no: int,
    run: Any,
    metrics_urls: list[str],
    shipper_health: str | None = None,
) -> RunRecord:
    # the scrapes stay outside the CPU window: serving them is not the requests' cost
    _shipped(shipper_health)
    scraped = service_metrics.totals(metrics_urls) if metrics_urls else None
    before = procstat.snapshot(config.components)
    load: LoadResult = run()
    _shipped(shipper_health)  # shipping this run's rows is part of its cost
    after = procstat.snapshot(config.components)
    cpu = procstat.cpu_delta(before, after)
    record = RunRecord(config.key, kind, round_no, load, cpu, after.rss)
    if scraped is not None:
        record.service = service_metrics.summarize(scraped, service_metrics.totals(metrics_urls))
    return record


def _targets(stack: Stack, config: Configuration) -> Path:
    path = stack.workdir / f"targets-{config.key}.txt"
    if not path.exists():
        write_vegeta_targets(path, config.url, stack.tokens)
    return path


def _runner(stack: Stack, plan: Plan, config: Configuration, kind: str) -> Any:
    if kind == SATURATION:
        return lambda: wrk_saturation(
            config.url, stack.tokens_file, seconds=plan.seconds, connections=plan.connections
        )
    rate = int(kind.removeprefix("rate-"))
    return lambda: vegeta_rate(
        _targets(stack, config), rate=rate, seconds=plan.seconds, workdir=stack.workdir
    )


def run_rounds(stack: Stack, plan: Plan, log: Any) -> list[RunRecord]:
    records: list[RunRecord] = []
    configs = stack.configurations
    for config in configs:  # warm caches, pools and JIT-less paths alike, unrecorded
        wrk_saturation(config.url, stack.tokens_file, seconds=2, connections=plan.connections)
    kinds = [SATURATION] + [f"rate-{rate}" for rate in plan.rates]
    for round_no in range(1, plan.rounds + 1):
        shift = (round_no - 1) % len(configs)
        ordered = configs[shift:] + configs[:shift]  # drift lands on every configuration
        for kind in kinds:
            for config in ordered:
                record = _measure(
                    config,
                    kind,
                    round_no,
                    _runner(stack, plan, config, kind),
                    stack.metrics_urls.get(config.key, []),
                    stack.shipper_health.get(config.key),
                )
                records.append(record)
                load = record.load
                state = "ok" if load.ok else f"FAILED ({load.non2xx} non-2xx, {load.errors} errors)"
                log(
                    f"round {round_no} {kind:<11} {config.key:<15} {load.rps:8.0f} req/s "
                    f"p50 {load.p50_ms:6.2f} p99 {load.p99_ms:7.2f} ms  {state} {load.note}"
                )
                time.sleep(0.5)
    return records


def memory_run(stack: Stack, plan: Plan, log: Any) -> MemoryTrace | None:
    config = next((c for c in stack.configurations if c.key == plan.memory_config), None)
    if config is None or plan.memory_seconds <= 0:
        return None
    trace = MemoryTrace(config.key, plan.memory_rate, plan.memory_seconds)
    pids = config.components["authz"]
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            rss = procstat.rss_bytes(procstat.tree(pids))
            trace.samples.append((round(time.monotonic() - started, 1), rss))
            done.wait(max(1.0, plan.memory_seconds / 60))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log(f"memory: {config.key} at {plan.memory_rate} req/s for {plan.memory_seconds:.0f}s")
    trace.load = vegeta_rate(
        _targets(stack, config),
        rate=plan.memory_rate,
        seconds=plan.memory_seconds,
        workdir=stack.workdir,
    )
    done.set()
    sampler.join(timeout=10)
    trace.samples.append(
        (round(time.monotonic() - started, 1), procstat.rss_bytes(procstat.tree(pids)))
    )
    return trace
