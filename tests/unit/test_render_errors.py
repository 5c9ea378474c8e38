"""A bad gateway config gives one line `file: key.path: reason`, exit 2 and no output files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import render
from gateway_config import ConfigError, load_gateway_config
from gateway_contract.runtime import GatewayType

BAD_CONFIGS = sorted((Path(__file__).parent / "fixtures" / "bad_configs").glob("*.yaml"))
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must open with '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_there_is_one_fixture_per_invalid_case() -> None:
    assert len(BAD_CONFIGS) >= 15


@pytest.mark.parametrize("config_path", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_bad_config_names_file_key_and_reason_and_writes_nothing(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "build"
    code = render.main(["--config", str(config_path), "--out", str(out)])
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"{config_path}: {_expected(config_path)}"), stderr
    assert not out.exists()


def test_bad_config_leaves_a_previous_render_untouched(tmp_path: Path) -> None:
    out = tmp_path / "build"
    render.render_all(EXAMPLE, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError):
        render.render_all(BAD_CONFIGS[0], out)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_error_in_a_referenced_file_names_that_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(EXAMPLE, config)
    text = config.read_text(encoding="utf-8")
    start = text.index("rbac:")
    end = text.index("budgets:")
    config.write_text(text[:start] + "rbac: roles.yaml\n\n" + text[end:], encoding="utf-8")
    (tmp_path / "roles.yaml").write_text("PLANT:\n  admin: ['*']\nXP: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(config)
    assert str(caught.value).startswith(f"{tmp_path / 'roles.yaml'}: XP")


def test_referenced_rbac_file_is_loaded(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("rbac:")
    end = text.index("budgets:")
    config.write_text(text[:start] + "rbac: roles.yaml\n\n" + text[end:], encoding="utf-8")
    # every entry point's type needs a role for each of its routes (else: can never authorize)
    (tmp_path / "roles.yaml").write_text(
        "PLANT:\n  admin: ['*']\nCP:\n  staff: ['*']\nPP:\n  admin: ['*']\n", encoding="utf-8"
    )
    loaded = load_gateway_config(config)
    assert loaded.rbac[GatewayType.CP] == {"staff": ("*",)}


def test_set_overrides_must_be_key_equals_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = render.main(["--config", str(EXAMPLE), "--out", str(tmp_path), "--set", "authz.port"])
    assert code == 2
    assert "--set: authz.port: expected KEY.PATH=VALUE" in capsys.readouterr().err


def test_override_that_breaks_the_config_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = render.main(
        [
            "--config",
            str(EXAMPLE),
            "--out",
            str(tmp_path / "b"),
            "--set",
            "entry_points.cp.port=8090",
        ]
    )
    assert code == 2
    assert "entry_points.cp.port: port 8090 is already used" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
