"""The authz workers' own Prometheus figures, summed over workers: where a check's time goes."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# "sum:<stage>", "count:<stage>", "lookup:<cache>:<result>", "le:<seconds>" (whole checks)
Totals = dict[str, float]
# Whole checks longer than these (seconds) inside the service: is a tail the pipeline's or not?
SLOW_BOUNDS = ("0.001", "0.0025")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def totals(urls: list[str]) -> Totals:
    """Cumulative check/stage duration sums and counts and cache lookups of all workers."""
    out: Totals = defaultdict(float)
    for url in urls:
        for family in text_string_to_metric_families(_scrape(url)):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if name == "authz_cache_lookups_total":
                    out[f"lookup:{labels.get('cache', '?')}:{labels.get('result', '?')}"] += value
                    continue
                if name == "authz_check_duration_seconds_bucket":
                    if labels.get("le") in SLOW_BOUNDS:
                        out[f"le:{labels['le']}"] += value
                    continue
                if name.startswith("authz_check_duration_seconds_"):
                    key = "check"
                elif name.startswith("authz_stage_duration_seconds_"):
                    key = labels.get("stage", "?")
                else:
                    continue
                if name.endswith("_sum"):
                    out[f"sum:{key}"] += value
                elif name.endswith("_count"):
                    out[f"count:{key}"] += value
    return dict(out)


def summarize(before: Totals, after: Totals) -> dict[str, Any]:
    """Mean check and stage durations (ms) and cache hit ratios between two scrapes."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    mean_ms: dict[str, float] = {}
    for key, count in delta.items():
        if key.startswith("count:") and count > 0:
            stage = key.removeprefix("count:")
            mean_ms[stage] = round(1000 * delta.get(f"sum:{stage}", 0.0) / count, 3)
    lookups: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in delta.items():
        if key.startswith("lookup:"):
            _, cache, result = key.split(":", 2)
            lookups[cache][result] = value
    hit_ratio = {
        cache: round(r.get("hit", 0.0) / max(1.0, sum(r.values())), 4)
        for cache, r in lookups.items()
    }
    checks = delta.get("count:check", 0.0)
    slower = {
        f"over_{float(bound) * 1000:g}ms": round(1 - delta.get(f"le:{bound}", 0.0) / checks, 5)
        for bound in SLOW_BOUNDS
        if checks > 0
    }
    return {
        "checks": checks,
        "slower_share": slower,  # share of checks that took longer inside the service
        "mean_ms": mean_ms,
        "cache_hit_ratio": hit_ratio,
    }
