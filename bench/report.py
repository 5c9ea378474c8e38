"""Writes the results: Markdown, JSON and a PNG plot; prints the ratio lines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.analysis import ALTERNATIVE, BASELINE, Cell, Target, memory_verdict, ratio
from bench.runner import SATURATION, MemoryTrace, RunRecord

TITLES = {
    "envoy": "(1) Envoy alone",
    "authz-http": "(2c) authz_service over HTTP, workers",
    "authz-embedded": "(2a) authz_service, gRPC, embedded policy",
    "authz-opa": "(2b) authz_service, gRPC, OPA server policy",
    "opa-envoy": "(3) OPA-Envoy plugin",
    "native": "(4) Envoy jwt_authn + rbac",
    "http-noop": "(0b) bare HTTP allow-all",
    "python-noop": "(0) bare grpc.aio allow-all",
}


_STAGE_ORDER = {
    "check": 0,
    "authenticate": 1,
    "authorize": 2,
    "policy": 3,
    "budget": 4,
    "decide": 5,
}


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def total_cpu_us(cell: Cell) -> float:
    """CPU of every serving process per request (the load generator left out)."""
    return sum(v for name, v in cell.cpu_us.items() if name != "loadgen")


def ratio_lines(table: dict[tuple[str, str], Cell], configs: list[str]) -> list[str]:
    """Throughput against (1) and (3), and the CPU-cost ratio (CPU of (1 or 3) / CPU of this):
    on a CPU-bound machine the second predicts the first and is far less sensitive to noise."""
    lines = []
    base = table.get((BASELINE, SATURATION))
    alt = table.get((ALTERNATIVE, SATURATION))
    base = base if base is not None and not base.failed else None
    alt = alt if alt is not None and not alt.failed else None
    for key in configs:
        cell = table.get((key, SATURATION))
        if cell is None:
            continue
        if cell.failed:
            lines.append(f"{key:<15} saturation FAILED ({cell.rounds_failed} failed rounds)")
            continue
        vs1 = ratio(cell.rps, base.rps) if base else None
        vs3 = ratio(cell.rps, alt.rps) if alt else None
        cpu = total_cpu_us(cell)
        cpu1 = ratio(total_cpu_us(base), cpu) if base else None
        cpu3 = ratio(total_cpu_us(alt), cpu) if alt else None
        lines.append(
            f"{key:<15} {cell.rps:7.0f} req/s  {_fmt(vs1, '.3f', 'x')} of (1)  "
            f"{_fmt(vs3, '.3f', 'x')} of (3)  | {cpu:5.0f} CPU us/req  cost ratio "
            f"{_fmt(cpu1, '.3f', 'x')} of (1)  {_fmt(cpu3, '.3f', 'x')} of (3)"
        )
    return lines


def summary_rows(table: dict[tuple[str, str], Cell], configs: list[str]) -> list[str]:
    """One line per configuration: saturation throughput and its ratios, CPU, latency at 500/s."""
    rows = [
        "| configuration | req/s at saturation | vs (1) | vs (3) | CPU µs/req | "
        "p50 / p99 ms at 500/s | added p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base, alt = table.get((BASELINE, SATURATION)), table.get((ALTERNATIVE, SATURATION))
    base500 = table.get((BASELINE, "rate-500"))
    for key in configs:
        sat, at500 = table.get((key, SATURATION)), table.get((key, "rate-500"))
        if sat is None:
            continue
        if sat.failed:
            rows.append(f"| {TITLES.get(key, key)} | FAILED | | | | | |")
            continue
        vs1 = ratio(sat.rps, base.rps) if base and not base.failed else None
        vs3 = ratio(sat.rps, alt.rps) if alt and not alt.failed else None
        lat = added = "—"
        if at500 is not None and not at500.failed:
            lat = f"{at500.p50_ms:.2f} / {at500.p99_ms:.2f}"
            if base500 is not None and not base500.failed:
                added = (
                    f"{at500.p50_ms - base500.p50_ms:+.2f} / {at500.p99_ms - base500.p99_ms:+.2f}"
                )
        elif at500 is not None:
            lat = "FAILED"
        rows.append(
            f"| {TITLES.get(key, key)} | {sat.rps:.0f} | {_fmt(vs1, '.3f', 'x')} | "
            f"{_fmt(vs3, '.3f', 'x')} | {total_cpu_us(sat):.0f} | {lat} | {added} |"
        )
    return rows


def _latency_rows(
    table: dict[tuple[str, str], Cell], configs: list[str], kinds: list[str]
) -> list[str]:
    rows = [
        "| configuration | load | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "added p50 ms | added p99 ms | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind in kinds:
        base = table.get((BASELINE, kind))
        for key in configs:
            cell = table.get((key, kind))
            if cell is None:
                continue
            status = "ok" if not cell.failed else f"FAILED ({cell.rounds_failed} rounds)"
            usable = base is not None and not base.failed and not cell.failed
            add50 = cell.p50_ms - base.p50_ms if usable and base else None
            add99 = cell.p99_ms - base.p99_ms if usable and base else None
            rows.append(
                f"| {TITLES.get(key, key)} | {kind} | {cell.rps:.0f} | {cell.p50_ms:.2f} | "
                f"{cell.p90_ms:.2f} | {cell.p99_ms:.2f} | {cell.p999_ms:.2f} | "
                f"{_fmt(add50, '+.2f')} | {_fmt(add99, '+.2f')} | {status} |"
            )
    return rows


# the processes a request costs, in the tables' and the plot's order (the audit shipper ships
# the configuration's rows into PostgreSQL)
SERVING = ["envoy", "backend", "authz", "opa", "opa-envoy", "redis", "postgres", "shipper"]


def _cpu_rows(table: dict[tuple[str, str], Cell], configs: list[str], kind: str) -> list[str]:
    names = [*SERVING, "loadgen"]
    rows = [
        "| configuration | " + " | ".join(names) + " | total (no loadgen) | RSS MiB |",
        "| --- |" + " ---: |" * (len(names) + 2),
    ]
    for key in configs:
        cell = table.get((key, kind))
        if cell is None or cell.failed:
            continue
        values = [_fmt(cell.cpu_us.get(n), ".0f") if n in cell.cpu_us else "" for n in names]
        total = total_cpu_us(cell)
        rss = ", ".join(f"{n} {v:.0f}" for n, v in cell.rss_mib.items() if n != "backend")
        rows.append(
            f"| {TITLES.get(key, key)} | " + " | ".join(values) + f" | {total:.0f} | {rss} |"
        )
    return rows


def markdown(
    table: dict[tuple[str, str], Cell],
    configs: list[str],
    kinds: list[str],
    found: list[Target],
    trace: MemoryTrace | None,
    meta: dict[str, Any],
) -> str:
    lines = [
        f"# Benchmark results ({meta['started']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. {meta['notes']}",
        "",
        "## Summary",
        "",
        *summary_rows(table, configs),
        "",
        "## Ratios at saturation",
        "",
        "```",
        *ratio_lines(table, configs),
        "```",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for target in found:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target.met]
        lines.append(f"| {target.name} | {target.measured} | {verdict} |")
    lines += [
        "",
        "## Throughput and latency (median over rounds)",
        "",
        *_latency_rows(table, configs, kinds),
        "",
    ]
    for kind in [k for k in (SATURATION, "rate-500") if k in kinds]:
        lines += [
            f"## CPU µs per request per process ({kind}) and memory",
            "",
            *_cpu_rows(table, configs, kind),
            "",
        ]
    flat, info = memory_verdict(trace)
    if trace is not None:
        lines += [
            "## Memory of the authz service at a fixed rate",
            "",
            f"{trace.config} at {trace.rate} req/s for {trace.seconds:.0f}s: "
            + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
            )
            + f" → {'flat' if flat else 'NOT flat'}.",
            "",
        ]
    service = meta.get("service_metrics") or {}
    if service:
        lines += [
            "## Inside the authz service (its own Prometheus figures, median over rounds)",
            "",
            "| configuration, load | checks | mean ms: whole check, then per stage | cache hits "
            "| checks over 1 / 2.5 ms |",
            "| --- | ---: | --- | --- | ---: |",
        ]
        for key, figures in service.items():
            means = sorted(figures["mean_ms"].items(), key=lambda kv: _STAGE_ORDER.get(kv[0], 9))
            stages = ", ".join(f"{k} {v:.3f}" for k, v in means)
            hits = ", ".join(f"{k} {v:.3f}" for k, v in figures["cache_hit_ratio"].items())
            slow = figures.get("slower_share", {})
            over = " / ".join(
                f"{100 * slow[b]:.2f}%" for b in ("over_1ms", "over_2.5ms") if b in slow
            )
            lines.append(f"| {key} | {figures['checks']:.0f} | {stages} | {hits} | {over} |")
        lines.append("")
    if meta.get("profile"):
        lines += [f"Profile of one authz worker at saturation: `{meta['profile']}`.", ""]
    lines += ["![throughput and latency](latest.png)", ""]
    return "\n".join(lines)


def plot(
    table: dict[tuple[str, str], Cell],
    configs: list[str],
    kinds: list[str],
    trace: MemoryTrace | None,
    out: Path,
) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rate_kinds = [k for k in kinds if k != SATURATION]
    fig, grid = plt.subplots(2, 2, figsize=(14, 10))
    axes = list(grid.flat)
    labels = [TITLES.get(k, k).split(" ", 1)[0] for k in configs]
    sat = [table.get((k, SATURATION)) for k in configs]
    axes[0].bar(
        labels,
        [c.rps if c and not c.failed else 0 for c in sat],
        color=["#888" if k == BASELINE else "#1f77b4" for k in configs],
    )
    axes[0].set_title("throughput at saturation (req/s)")
    for i, c in enumerate(sat):
        if c is not None:
            axes[0].annotate(
                "FAILED" if c.failed else f"{c.rps:.0f}",
                (i, c.rps),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    width = 0.8 / max(1, len(configs))
    percentiles = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
    positions = range(len(rate_kinds) * len(percentiles))
    for j, key in enumerate(configs):
        values = []
        for kind in rate_kinds:
            cell = table.get((key, kind))
            values += [getattr(cell, p) if cell and not cell.failed else 0 for p in percentiles]
        axes[1].bar([x + j * width for x in positions], values, width, label=labels[j])
    axes[1].set_xticks([x + 0.4 - width / 2 for x in positions])
    axes[1].set_xticklabels(
        [
            f"{k.removeprefix('rate-')}/s\n{p.removesuffix('_ms')}"
            for k in rate_kinds
            for p in percentiles
        ],
        fontsize=7,
    )
    axes[1].set_yscale("log")
    axes[1].set_title("latency percentiles at fixed rates (ms, log)")
    axes[1].legend(fontsize=7)
    bottoms = [0.0] * len(configs)
    for name in SERVING:
        values = [c.cpu_us.get(name, 0.0) if c is not None and not c.failed else 0.0 for c in sat]
        if any(values):
            axes[2].bar(labels, values, bottom=bottoms, label=name)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes[2].set_title("CPU µs per request at saturation, per process")
    axes[2].legend(fontsize=7)
    if trace is not None:
        mib = [r / 2**20 for _, r in trace.samples]
        axes[3].plot([t for t, _ in trace.samples], mib)
        axes[3].set_title(f"authz RSS (MiB, all workers) at {trace.rate} req/s")
        axes[3].set_xlabel("seconds")
        axes[3].set_ylim(0, max(mib) * 1.2)
    else:
        axes[3].axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write(
    out_dir: Path,
    records: list[RunRecord],
    table: dict[tuple[str, str], Cell],
    configs: list[str],
    kinds: list[str],
    found: list[Target],
    trace: MemoryTrace | None,
    meta: dict[str, Any],
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = meta["started"].replace(":", "").replace("-", "")
    flat, info = memory_verdict(trace)
    data = {
        "meta": meta,
        "ratios": ratio_lines(table, configs),
        "targets": [t.__dict__ for t in found],
        "cells": [c.__dict__ | {"failed": c.failed} for c in table.values()],
        "runs": [r.as_dict() for r in records],
        "memory": None
        if trace is None
        else {
            "config": trace.config,
            "rate": trace.rate,
            "seconds": trace.seconds,
            "samples": trace.samples,
            "verdict_flat": flat,
            **info,
        },
    }
    text = markdown(table, configs, kinds, found, trace, meta)
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    (out_dir / f"{stem}.md").write_text(text.replace("(latest.png)", f"({stem}.png)"))
    plot(table, configs, kinds, trace, out_dir / f"{stem}.png")
    (out_dir / "latest.md").write_text(text)
    (out_dir / "latest.json").write_text((out_dir / f"{stem}.json").read_text())
    (out_dir / "latest.png").write_bytes((out_dir / f"{stem}.png").read_bytes())
    return out_dir / "latest.md"


START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def _section(md: str, title: str) -> str:
    found = re.search(rf"^## {re.escape(title)}\n\n(.*?)(?=\n## |\Z)", md, re.S | re.M)
    return found.group(1).strip() if found else ""


def update_readme(readme: Path, md: str) -> None:
    """Put the run's summary, ratios and targets between the README's results markers."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} markers")
    command = re.search(r"^Command: (.*)$", md, re.M)
    started = re.search(r"^# Benchmark results \((.*)\)$", md, re.M)
    block = "\n\n".join(
        [
            f"Run {started.group(1) if started else '?'}, "
            f"{command.group(1) if command else '?'}, on the project's shared 2-core machine.",
            _section(md, "Summary"),
            "```\n" + _section(md, "Ratios at saturation").strip("`\n") + "\n```",
            "Targets:\n\n" + _section(md, "Targets"),
        ]
    )
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
