"""Settings come from AUTHZ_* once; bad values fail naming the key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

import render
from authz_service.__main__ import main
from authz_service.settings import SettingsLoadError, load_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "gateway.yaml"
HS = {"issuer": "https://i", "audiences": ["a"], "algorithms": ["HS256"], "hs256_secret": "x" * 32}


def _issuers(monkeypatch: pytest.MonkeyPatch, *issuers: Mapping[str, object]) -> None:
    monkeypatch.setenv("AUTHZ_JWT_ISSUERS", json.dumps(list(issuers)))


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _issuers(monkeypatch, HS)
    monkeypatch.setenv("AUTHZ_POLICY_FAIL_OPEN", "true")
    settings = load_settings()
    assert settings.grpc_address == "127.0.0.1:9001"
    assert settings.metrics_address == "127.0.0.1:9464"
    assert str(settings.runtime_config) == "build/authz/runtime.json"
    assert (settings.opa_url, settings.redis_url) == ("", "")
    assert (str(settings.audit_journal_dir), settings.audit_fsync) == ("var/audit-journal", "off")
    assert (settings.policy_fail_open, settings.budget_fail_open) == (True, False)
    assert settings.jwt_issuers[0].hs256_secret is not None
    assert "x" * 32 not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AUTHZ_AUDIT_FSYNC", "sometimes"), ("AUTHZ_AUDIT_JOURNAL_MAX_BYTES", "10"),
     ("AUTHZ_AUDIT_JOURNAL_SCAN_SECONDS", "0")],
)  # fmt: skip
def test_bad_journal_settings_name_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    _issuers(monkeypatch, HS)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsLoadError, match=variable):
        load_settings()


def test_issuers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHZ_JWT_ISSUERS", raising=False)
    with pytest.raises(SettingsLoadError, match="AUTHZ_JWT_ISSUERS"):
        load_settings()


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ({**HS, "algorithms": ["none"]}, "not allowed"),
        ({**HS, "algorithms": ["RS256"]}, "do not fit hs256_secret"),
        (
            {**HS, "hs256_secret": None, "public_key_pem": "x", "algorithms": ["HS256"]},
            "do not fit",
        ),
        ({**HS, "jwks_url": "http://127.0.0.1:1/jwks"}, "exactly one"),
        ({**HS, "hs256_secret": "short"}, "32 characters"),
        ({**HS, "audiences": []}, "audiences"),
    ],
)
def test_invalid_issuer_names_the_key(
    monkeypatch: pytest.MonkeyPatch, issuer: dict[str, object], message: str
) -> None:
    _issuers(monkeypatch, issuer)
    with pytest.raises(SettingsLoadError, match="AUTHZ_JWT_ISSUERS") as info:
        load_settings()
    assert message in str(info.value)


def test_bad_scalar_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _issuers(monkeypatch, HS)
    monkeypatch.setenv("AUTHZ_OPA_TIMEOUT_SECONDS", "soon")
    with pytest.raises(SettingsLoadError, match="AUTHZ_OPA_TIMEOUT_SECONDS"):
        load_settings()


def test_settings_command_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in (
        "AUTHZ_GRPC_ADDRESS",
        "AUTHZ_JWT_ISSUERS",
        "AUTHZ_REDIS_URL",
        "AUTHZ_BUDGET_FAIL_OPEN",
    ):
        assert name in out


def test_serve_fails_fast_on_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTHZ_JWT_ISSUERS", raising=False)
    assert main(["serve"]) == 2
    assert "AUTHZ_JWT_ISSUERS" in capsys.readouterr().err


@pytest.mark.parametrize(("policy_headers", "refused"), [('["x-tenant"]', True), ("[]", False)])
def test_serve_refuses_policy_headers_envoy_never_sends(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    policy_headers: str,
    refused: bool,
) -> None:
    assert render.main(["--config", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    _issuers(monkeypatch, HS)
    monkeypatch.setenv("AUTHZ_RUNTIME_CONFIG", str(tmp_path / "authz" / "runtime.json"))
    monkeypatch.setenv("AUTHZ_POLICY_HEADERS", policy_headers)
    monkeypatch.setenv("AUTHZ_AUDIT_JOURNAL_DIR", str(tmp_path / "journal"))
    monkeypatch.setenv("AUTHZ_GRPC_ADDRESS", "127.0.0.1:not-a-port")  # stops a run that starts
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    if refused:
        assert "Envoy does not send x-tenant" in err
        assert "AUTHZ_POLICY_HEADERS" in err
        assert "authz.policy_headers" in err
    else:
        assert "Envoy does not send" not in err


@pytest.mark.parametrize(
    ("headers_kb", "max_head_bytes", "refused"),
    [(60, None, False), (60, "40000", True), (120, None, True), (120, str(124 * 1024), False)],
)
def test_serve_refuses_an_http_head_limit_below_what_envoy_can_send(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    headers_kb: int,
    max_head_bytes: str | None,
    refused: bool,
) -> None:
    """A request Envoy admits (its max_request_headers_kb) must never meet the HTTP
    transport's own 431 (hostile pass 2026-11-30: a 40 KB User-Agent did, unaudited)."""
    overrides = ["--set", f"limits.max_request_headers_kb={headers_kb}"]
    assert render.main(["--config", str(EXAMPLE), "--out", str(tmp_path), *overrides]) == 0
    _issuers(monkeypatch, HS)
    monkeypatch.setenv("AUTHZ_RUNTIME_CONFIG", str(tmp_path / "authz" / "runtime.json"))
    monkeypatch.setenv("AUTHZ_AUDIT_JOURNAL_DIR", str(tmp_path / "journal"))
    if max_head_bytes is not None:
        monkeypatch.setenv("AUTHZ_HTTP_MAX_HEAD_BYTES", max_head_bytes)
    monkeypatch.setenv("AUTHZ_HTTP_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("AUTHZ_GRPC_ADDRESS", "127.0.0.1:not-a-port")  # stops a run that starts
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert ("AUTHZ_HTTP_MAX_HEAD_BYTES" in err) == refused, err
    if refused:
        assert "limits.max_request_headers_kb" in err
