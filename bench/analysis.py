"""Turns run records into per-configuration figures, ratios against (1) and (3), and targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.runner import SATURATION, MemoryTrace, RunRecord

BASELINE = "envoy"
ALTERNATIVE = "opa-envoy"
OURS = ("authz-embedded", "authz-opa")
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


def targets(table: dict[tuple[str, str], Cell], trace: MemoryTrace | None) -> list[Target]:
    found: list[Target] = []
    base = table.get((BASELINE, SATURATION))
    alt = table.get((ALTERNATIVE, SATURATION))
    for ours in OURS:
        cell = table.get((ours, SATURATION))
        if cell is None:
            continue
        usable = cell is not None and not cell.failed
        if base is not None and not base.failed:
            r = ratio(cell.rps, base.rps) if usable else None
            found.append(
                Target(
                    f"{ours}: throughput ≥ 0.2x (1)",
                    None if r is None else r >= 0.2,
                    "failed run" if r is None else f"{r:.3f}x",
                )
            )
        if alt is not None and not alt.failed:
            r = ratio(cell.rps, alt.rps) if usable else None
            found.append(
                Target(
                    f"{ours}: throughput ≥ 1.0x (3) OPA-Envoy",
                    None if r is None else r >= 1.0,
                    "failed run" if r is None else f"{r:.3f}x",
                )
            )
        at500 = table.get((ours, "rate-500"))
        base500 = table.get((BASELINE, "rate-500"))
        if at500 is not None and base500 is not None:
            if at500.failed or base500.failed:
                found.append(
                    Target(
                        f"{ours}: at 500 req/s added p50 ≤ 1.5 ms, p99 ≤ 3 ms", False, "failed run"
                    )
                )
            else:
                d50 = at500.p50_ms - base500.p50_ms
                d99 = at500.p99_ms - base500.p99_ms
                found.append(
                    Target(f"{ours}: at 500 req/s added p50 ≤ 1.5 ms", d50 <= 1.5, f"+{d50:.2f} ms")
                )
                found.append(
                    Target(f"{ours}: at 500 req/s added p99 ≤ 3 ms", d99 <= 3.0, f"+{d99:.2f} ms")
                )
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
