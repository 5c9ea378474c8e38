"""Every render target's output passes `envoy --mode validate`, dynamic resources included."""

from __future__ import annotations

from pathlib import Path

import pytest

import render

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
ENTRIES = ("plant", "cp", "pp")
TARGETS = {
    "local": [],
    "compose": [],
    "cloudrun": ["--var", "project_number=123456789012"],
    "kubernetes": [],
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outs = {}
    for target, extra in TARGETS.items():
        out = tmp_path_factory.mktemp(f"validate-{target}")
        args = ["--config", str(EXAMPLE), "--out", str(out), "--target", target, *extra]
        assert render.main(args) == 0
        outs[target] = out
    return outs


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("target", TARGETS)
def test_target_validates(envoy: str, rendered: dict[str, Path], target: str, entry: str) -> None:
    assert render.validate_with_envoy(rendered[target] / "envoy" / f"{entry}.yaml", envoy) is None


def test_validation_sees_the_tls_hop(envoy: str, rendered: dict[str, Path]) -> None:
    # the check is real: a bad value in the Cloud Run-only TLS block fails validation
    cds = rendered["cloudrun"] / "envoy" / "cp" / "cds.yaml"
    original = cds.read_text()
    cds.write_text(original.replace("san_type: DNS", "san_type: NOT_A_SAN_TYPE"))
    try:
        problem = render.validate_with_envoy(rendered["cloudrun"] / "envoy" / "cp.yaml", envoy)
    finally:
        cds.write_text(original)
    assert problem is not None
