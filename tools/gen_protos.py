"""Compiles protos/ into authz_service/_proto with grpcio-tools (`make protos`).

The generated modules are committed; `--check` regenerates into a temporary folder and fails
when the committed copy is stale, which the unit tests run so a proto edit can't drift.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "authz_service" / "_proto"


PACKAGE = "authz_service/_proto"


def generate(out: Path) -> None:
    """Run protoc over every .proto under protos/ into `out` (the authz_service/_proto tree).

    protos/ is mapped onto the virtual path authz_service/_proto so the generated modules
    import each other as `authz_service._proto....`, with no rewriting afterwards.
    """
    sources = sorted(f"{PACKAGE}/{p.relative_to(PROTOS)}" for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PACKAGE}={PROTOS}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {', '.join(sources)}")
        generated = Path(tmp) / PACKAGE
        for folder in [generated, *(p for p in generated.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(generated, out)


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Relative paths that differ between the committed and a fresh generation."""
    names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    names |= {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()}
    return sorted(
        str(n)
        for n in names
        if "__pycache__" not in n.parts
        and not (
            (committed / n).is_file()
            and (fresh / n).is_file()
            and filecmp.cmp(committed / n, fresh / n, shallow=False)
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = stale_files(OUT, Path(tmp))
    if stale:
        print(
            f"authz_service/_proto is stale ({', '.join(stale)}): run `make protos`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
