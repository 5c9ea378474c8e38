"""Turns run records into per-configuration figures, ratios against (1) and (3), and targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.runner import SATURATION, MemoryTrace, RunRecord

BASELINE = "envoy"
ALTERNATIVE = "opa-envoy"
HTTP = "authz-http"  # (2c): the full pipeline over HTTP with workers
GRPC = "authz-embedded"  # (2a)
# (2a) in bench/results/20261125T134239Z, before the HTTP transport: the gRPC baseline
GRPC_BEFORE_RATIO = 0.118
GRPC_BEFORE_CPU_US = 744
MiB = 1024 * 1024


@dataclass
class Cell:
    """The median over the successful rounds of one configuration and one kind of run."""

    config: str
    kind: str
    rounds_ok: int
    rounds_failed: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    cpu_us: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.rounds_failed > 0 or self.rounds_ok == 0


def cells(records: list[RunRecord]) -> dict[tuple[str, str], Cell]:
    grouped: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        grouped.setdefault((record.config, record.kind), []).append(record)
    out: dict[tuple[str, str], Cell] = {}
    for (config, kind), group in grouped.items():
        good = [r for r in group if r.load.ok]
        cell = Cell(config, kind, len(good), len(group) - len(good))
        if good:
            med = statistics.median
            cell.rps = med(r.load.rps for r in good)
            cell.p50_ms = med(r.load.p50_ms for r in good)
            cell.p90_ms = med(r.load.p90_ms for r in good)
            cell.p99_ms = med(r.load.p99_ms for r in good)
            cell.p999_ms = med(r.load.p999_ms for r in good)
            names = set(good[0].cpu_s) | {"loadgen"}
            for name in sorted(names):
                cell.cpu_us[name] = med(r.as_dict()["cpu_us_per_request"][name] for r in good)
            for name in good[0].rss:
                cell.rss_mib[name] = max(r.rss[name] for r in good) / MiB
        out[(config, kind)] = cell
    return out


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


@dataclass
class Target:
    name: str
    met: bool | None  # None: not measured
    measured: str


def memory_verdict(trace: MemoryTrace | None) -> tuple[bool | None, dict[str, Any]]:
    """Flat: after the first quarter (warm-up), the last quarter's mean RSS is within 5%
    (and 16 MiB) of the second quarter's."""
    if trace is None or len(trace.samples) < 8 or trace.load is None:
        return None, {}
    values = [rss for _, rss in trace.samples]
    quarter = len(values) // 4
    early = statistics.mean(values[quarter : 2 * quarter])
    late = statistics.mean(values[-quarter:])
    growth = late - early
    minutes = (trace.samples[-1][0] - trace.samples[quarter][0]) / 60 or 1.0
    info = {
        "start_mib": values[0] / MiB,
        "after_warmup_mib": early / MiB,
        "end_mib": late / MiB,
        "growth_mib": growth / MiB,
        "growth_mib_per_min": growth / MiB / minutes,
        "run_ok": trace.load.ok,
    }
    flat = growth <= min(0.05 * early, 16 * MiB) and trace.load.ok
    return flat, info


def _total_cpu(cell: Cell) -> float:
    return sum(v for name, v in cell.cpu_us.items() if name != "loadgen")


def _usable(table: dict[tuple[str, str], Cell], key: str, kind: str) -> Cell | None:
    cell = table.get((key, kind))
    return cell if cell is not None and not cell.failed else None


def _throughput(
    table: dict[tuple[str, str], Cell], ours: str, other: str, label: str, floor: float
) -> Target | None:
    """Throughput of `ours` against `other` at saturation, the CPU-cost ratio beside it."""
    if table.get((ours, SATURATION)) is None or table.get((other, SATURATION)) is None:
        return None
    cell, base = _usable(table, ours, SATURATION), _usable(table, other, SATURATION)
    name = f"{ours}: throughput ≥ {floor}x {label}"
    if cell is None or base is None:
        return Target(name, None, "failed run")
    r = cell.rps / base.rps
    cost = _total_cpu(base) / _total_cpu(cell)
    return Target(name, r >= floor, f"{r:.3f}x (CPU-cost ratio {cost:.3f}x)")


def _added_p99(
    table: dict[tuple[str, str], Cell], ours: str, rate: int, ceiling: float
) -> Target | None:
    kind = f"rate-{rate}"
    if table.get((ours, kind)) is None or table.get((BASELINE, kind)) is None:
        return None
    cell, base = _usable(table, ours, kind), _usable(table, BASELINE, kind)
    name = f"{ours}: added p99 ≤ {ceiling:g} ms at {rate} req/s"
    if cell is None or base is None:
        return Target(name, False, "failed run")
    added = cell.p99_ms - base.p99_ms
    return Target(name, added <= ceiling, f"{added:+.2f} ms")


def _authz_cpu(table: dict[tuple[str, str], Cell], ours: str, ceiling: float) -> Target | None:
    if table.get((ours, SATURATION)) is None:
        return None
    cell = _usable(table, ours, SATURATION)
    name = f"{ours}: authz CPU per check at saturation ≤ {ceiling:g} µs (all workers)"
    if cell is None:
        return Target(name, None, "failed run")
    used = cell.cpu_us.get("authz", 0.0)
    return Target(name, used <= ceiling, f"{used:.0f} µs")


def _grpc_no_regression(table: dict[tuple[str, str], Cell]) -> Target | None:
    if table.get((GRPC, SATURATION)) is None or table.get((BASELINE, SATURATION)) is None:
        return None
    cell, base = _usable(table, GRPC, SATURATION), _usable(table, BASELINE, SATURATION)
    name = (
        f"{GRPC}: no regression against the 2026-11-25 run ({GRPC_BEFORE_CPU_US} CPU µs/req, "
        f"{GRPC_BEFORE_RATIO}x of (1)); judged on CPU per request, 5 % allowed"
    )
    if cell is None or base is None:
        return Target(name, None, "failed run")
    # CPU per request is what a shared machine does not move; the throughput ratio, beside it,
    # moves with whatever else runs (and with how fast (1) happens to be in this run)
    r, cpu = cell.rps / base.rps, _total_cpu(cell)
    met = cpu <= GRPC_BEFORE_CPU_US * 1.05
    return Target(name, met, f"{cpu:.0f} µs/req ({r:.3f}x of (1))")


def targets(table: dict[tuple[str, str], Cell], trace: MemoryTrace | None) -> list[Target]:
    """Issue 14's targets for (2c), and the gRPC transport's no-regression check."""
    candidates = [
        _throughput(table, HTTP, ALTERNATIVE, "(3) OPA-Envoy plugin", 1.5),
        _throughput(table, HTTP, BASELINE, "(1) Envoy alone", 0.3),
        _authz_cpu(table, HTTP, 120.0),
        _added_p99(table, HTTP, 500, 2.0),
        _added_p99(table, HTTP, 1000, 4.0),
        _grpc_no_regression(table),
    ]
    found = [target for target in candidates if target is not None]
    flat, info = memory_verdict(trace)
    if trace is not None:
        measured = (
            (
                f"{info['after_warmup_mib']:.1f} → {info['end_mib']:.1f} MiB "
                f"({info['growth_mib']:+.1f} MiB) over {trace.seconds:.0f}s at "
                f"{trace.rate} req/s"
            )
            if info
            else "too few samples"
        )
        found.append(Target(f"{trace.config}: memory flat at a fixed rate", flat, measured))
    return found


def service_by_kind(records: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per configuration and kind of run: the authz service's own figures, median over rounds."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.service is not None and record.load.ok:
            grouped.setdefault(f"{record.config} {record.kind}", []).append(record.service)
    out: dict[str, dict[str, Any]] = {}
    for key, services in grouped.items():
        stages = {s for service in services for s in service["mean_ms"]}
        caches = {c for service in services for c in service["cache_hit_ratio"]}
        bounds = {b for service in services for b in service.get("slower_share", {})}
        out[key] = {
            "checks": sum(s["checks"] for s in services),
            "slower_share": {
                b: statistics.median(x.get("slower_share", {}).get(b, 0.0) for x in services)
                for b in sorted(bounds)
            },
            "mean_ms": {
                s: statistics.median(x["mean_ms"].get(s, 0.0) for x in services) for s in stages
            },
            "cache_hit_ratio": {
                c: statistics.median(x["cache_hit_ratio"].get(c, 0.0) for x in services)
                for c in caches
            },
        }
    return out
