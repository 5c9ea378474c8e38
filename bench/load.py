"""The load generators: wrk at saturation (closed loop) and vegeta at fixed rates (open loop)."""

from __future__ import annotations

import csv
import io
import json
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LoadResult:
    """One load run: what was sent, how it was answered, latency percentiles in ms."""

    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    loadgen_cpu_s: float
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.non2xx == 0 and self.errors == 0


def _run(argv: list[str], timeout: float) -> tuple[int, str, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return -9, out, err + "\n(timed out)"
    return proc.returncode, out, err


def _children_cpu() -> float:
    """CPU of reaped children: the load generator's own cost, read around its run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_saturation(
    url: str, tokens_file: Path, *, seconds: float, connections: int, threads: int = 1
) -> LoadResult:
    before = _children_cpu()
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "wrk.lua"),
        url,
        "--",
        str(tokens_file),
    ]
    code, out, err = _run(argv, timeout=seconds + 30)
    cpu = _children_cpu() - before
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if code != 0 or line is None:
        return LoadResult(0, seconds, 0, 1, 0, 0, 0, 0, cpu, note=f"wrk failed: {err.strip()}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        non2xx=int(data["non2xx"]),
        errors=int(data["socket_errors"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p999_us"] / 1000,
        loadgen_cpu_s=cpu,
    )


def write_vegeta_targets(path: Path, url: str, tokens: list[str]) -> None:
    path.write_text("".join(f"GET {url}\nAuthorization: Bearer {token}\n\n" for token in tokens))


def _percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def vegeta_rate(targets: Path, *, rate: int, seconds: float, workdir: Path) -> LoadResult:
    """Open loop: requests leave on schedule whatever the answers, so queueing delay counts."""
    results = workdir / f"vegeta-{rate}.bin"
    before = _children_cpu()
    argv = [
        "vegeta",
        "attack",
        f"-targets={targets}",
        f"-rate={rate}/1s",
        f"-duration={seconds:.0f}s",
        "-timeout=5s",
        "-workers=16",
        f"-output={results}",
    ]
    code, _, err = _run(argv, timeout=seconds + 30)
    cpu = _children_cpu() - before
    if code != 0:
        return LoadResult(0, seconds, 0, 1, 0, 0, 0, 0, cpu, note=f"vegeta failed: {err.strip()}")
    encoded = subprocess.run(
        ["vegeta", "encode", "--to=csv", str(results)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    results.unlink(missing_ok=True)
    latencies: list[int] = []
    non2xx = errors = 0
    first = last = 0
    for row in csv.reader(io.StringIO(encoded.stdout)):
        timestamp, status, latency, error = int(row[0]), int(row[1]), int(row[2]), row[5]
        first = timestamp if first == 0 else min(first, timestamp)
        last = max(last, timestamp)
        latencies.append(latency)
        if error:
            errors += 1
        elif not 200 <= status <= 299:
            non2xx += 1
    latencies.sort()
    span = (last - first) / 1e9 if last > first else seconds
    ms = 1e-6
    return LoadResult(
        requests=len(latencies),
        seconds=span,
        non2xx=non2xx,
        errors=errors,
        p50_ms=_percentile(latencies, 0.50) * ms,
        p90_ms=_percentile(latencies, 0.90) * ms,
        p99_ms=_percentile(latencies, 0.99) * ms,
        p999_ms=_percentile(latencies, 0.999) * ms,
        loadgen_cpu_s=cpu,
    )
