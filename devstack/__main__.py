"""CLI of the development stack: `python -m devstack up|down|token|demo|provision`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack.stackconfig import REPO_ROOT
from devstack.supervisor import RestartPolicy

DEFAULT_VAR = REPO_ROOT / "var"


def _port(assignment: str) -> tuple[str, int]:
    name, sep, value = assignment.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {assignment!r}")
    return name, int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--var-dir", type=Path, default=DEFAULT_VAR,
                        help="data, logs, dev key and state (default: var/)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the gateway as local processes until Ctrl-C")
    up.add_argument("--config", type=Path, default=REPO_ROOT / "config" / "gateway.yaml")
    up.add_argument("--build-dir", type=Path, default=REPO_ROOT / "build")
    up.add_argument(
        "--port",
        type=_port,
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="e.g. plant=18090 (names: entry points, NAME-admin, NAME-internal, backend, "
        "authz, metrics, admin, shipper)",
    )
    up.add_argument("--free-ports", action="store_true",
                    help="use free ports instead of the config's (tests)")  # fmt: skip
    policy = RestartPolicy()
    up.add_argument("--probe-period", type=float, default=policy.probe_period, metavar="S",
                    help="seconds between liveness probes of each part (0: none)")  # fmt: skip
    up.add_argument("--probe-timeout", type=float, default=policy.probe_timeout, metavar="S",
                    help="seconds a liveness probe may take")  # fmt: skip
    up.add_argument("--probe-failures", type=int, default=policy.probe_failures, metavar="N",
                    help="liveness probes failed in a row that restart a part")  # fmt: skip
    commands.add_parser("down", help="stop what `up` started")
    token = commands.add_parser("token", help="print a development token")
    token.add_argument("--role", default="customer", help="role, or comma-separated roles")
    token.add_argument("--customer", default="", help="customer id (x-customer-id)")
    token.add_argument("--user", default="dev-user", help="subject (x-user-id)")
    token.add_argument("--plan", default="", help="plan (default: trial if --trial, else standard)")
    token.add_argument("--trial", action="store_true", help="a trial principal")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    commands.add_parser("demo", help="a scripted walk through the running gateway")
    # its own options (python -m devstack provision --help): devstack/provision.py
    commands.add_parser(
        "provision", add_help=False, help="one-time database provisioning (compose, deploy)"
    )
    return parser


def _up(args: argparse.Namespace) -> int:
    from devstack.up import UpOptions, run  # noqa: PLC0415 - keep `token` imports light

    ports = dict(args.port)
    policy = RestartPolicy(probe_period=args.probe_period, probe_timeout=args.probe_timeout,
                           probe_failures=args.probe_failures)  # fmt: skip
    return run(UpOptions(args.config, args.var_dir, args.build_dir, ports, args.free_ports, policy))


def _down(args: argparse.Namespace) -> int:
    from devstack.stackstate import StackState, stop_stack  # noqa: PLC0415

    if StackState.read(args.var_dir) is None:
        print("devstack: nothing running", file=sys.stderr)
        return 0
    forced = stop_stack(args.var_dir)
    suffix = f" (killed after the timeout: {', '.join(forced)})" if forced else ""
    print(f"devstack: stopped{suffix}", file=sys.stderr)
    return 0


def _token(args: argparse.Namespace) -> int:
    from devstack import devkey  # noqa: PLC0415

    issuer = devkey.load_or_create(args.var_dir)
    roles = [role.strip() for role in args.role.split(",") if role.strip()]
    plan = args.plan or ("trial" if args.trial else "standard")
    token = issuer.sign(
        roles=roles, customer=args.customer, user=args.user, plan=plan, trial=args.trial,
        ttl=args.ttl,
    )  # fmt: skip
    print(token)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo  # noqa: PLC0415

    return run_demo(args.var_dir)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["provision"]:  # the same code as `make up`'s, for compose and deployments
        from devstack.provision import main as provision  # noqa: PLC0415 - psycopg only here

        return provision(given[1:])
    args = _parser().parse_args(given)
    commands = {"up": _up, "down": _down, "token": _token, "demo": _demo}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
