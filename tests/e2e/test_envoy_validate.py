"""Every rendered Envoy config passes `envoy --mode validate`, dynamic resources included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import render

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
ENTRIES = ("plant", "cp", "pp")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("validate")
    render.render_all(EXAMPLE, out)
    return out


@pytest.mark.parametrize("entry", ENTRIES)
def test_bootstrap_validates(envoy: str, rendered: Path, entry: str) -> None:
    result = subprocess.run(
        [
            envoy,
            "--mode",
            "validate",
            "-c",
            str(rendered / "envoy" / f"{entry}.yaml"),
            "--use-dynamic-base-id",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("entry", ENTRIES)
def test_listeners_clusters_and_routes_validate(envoy: str, rendered: Path, entry: str) -> None:
    # validate mode skips filesystem subscriptions, so check their static equivalent
    assert render.validate_with_envoy(rendered / "envoy" / f"{entry}.yaml", envoy) is None


def test_validation_catches_a_broken_listener(envoy: str, tmp_path: Path) -> None:
    render.render_all(EXAMPLE, tmp_path)
    lds = tmp_path / "envoy" / "plant" / "lds.yaml"
    lds.write_text(lds.read_text().replace("merge_slashes: true", "merge_slashes: maybe"))
    problem = render.validate_with_envoy(tmp_path / "envoy" / "plant.yaml", envoy)
    assert problem is not None
    assert "merge_slashes" in problem or "maybe" in problem


def test_cli_validate_flag(tmp_path: Path) -> None:
    assert render.main(["--config", str(EXAMPLE), "--out", str(tmp_path), "--validate"]) == 0
