"""render --target: each target changes only addresses, TLS and identity, and says what is wrong."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

import render

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "gateway.yaml"
BAD_TARGETS = sorted((Path(__file__).parent / "fixtures" / "bad_targets").glob("*.yaml"))
PROJECT_NUMBER = "123456789012"
CLOUD_RUN_SUFFIX = f"{PROJECT_NUMBER}.asia-south1.run.app"
ENTRIES = ("plant", "cp", "pp")


def _render(out: Path, target: str, *extra: str) -> Path:
    args = ["--config", str(EXAMPLE), "--out", str(out), "--target", target, *extra]
    assert render.main(args) == 0
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("targets")
    return {
        "default": _render(base / "default", "local"),
        "cloudrun": _render(
            base / "cloudrun", "cloudrun", "--var", f"project_number={PROJECT_NUMBER}"
        ),
        "kubernetes": _render(base / "kubernetes", "kubernetes"),
        "compose": _render(base / "compose", "compose"),
    }


def _resources(out: Path, entry: str, kind: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = yaml.safe_load(
        (out / "envoy" / entry / f"{kind}.yaml").read_text()
    )["resources"]
    return resources


def _clusters(out: Path, entry: str) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in _resources(out, entry, "cds")}


def _address(cluster: dict[str, Any]) -> tuple[str, int]:
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket = endpoint["address"]["socket_address"]
    return socket["address"], socket["port_value"]


def _http_filters(out: Path, entry: str) -> list[dict[str, Any]]:
    listener = _resources(out, entry, "lds")[0]
    filters: list[dict[str, Any]] = listener["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"
    ]
    return filters


def _runtime(out: Path) -> str:
    return (out / "authz" / "runtime.json").read_text()


def test_local_is_the_default_render(tmp_path: Path, rendered: dict[str, Path]) -> None:
    # same revision: the same validated config, so the same Envoy configs and runtime.json
    assert render.render_all(EXAMPLE, tmp_path).revision in _runtime(rendered["default"])
    assert _runtime(tmp_path) == _runtime(rendered["default"])


@pytest.mark.parametrize("target", ["cloudrun", "kubernetes", "compose"])
def test_a_target_changes_no_route_rbac_or_budget(rendered: dict[str, Path], target: str) -> None:
    default = json.loads(_runtime(rendered["default"]))
    other = json.loads(_runtime(rendered[target]))
    for key in ("rbac", "routes", "budgets", "sent_headers", "shadow"):
        assert other[key] == default[key], key
    assert other["revision"] != default["revision"]  # the addresses are part of the revision


@pytest.mark.parametrize("target", ["cloudrun", "kubernetes"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_authz_is_a_sidecar_on_loopback(rendered: dict[str, Path], target: str, entry: str) -> None:
    authz = _clusters(rendered[target], entry)["authz"]
    assert authz["type"] == "STATIC"
    assert _address(authz) == ("127.0.0.1", 9001)
    listener = _resources(rendered[target], entry, "lds")[0]
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("entry", "hop", "service"),
    [
        ("cp", "gateway_plant", "plant-internal"),  # PLANT's internal listener's own service
        ("pp", "gateway_plant", "plant-internal"),
        ("plant", "backend", "backend"),
    ],
)
def test_cloud_run_hops_are_https_with_an_id_token(
    rendered: dict[str, Path], entry: str, hop: str, service: str
) -> None:
    out = rendered["cloudrun"]
    host = f"gateway-{service}-{CLOUD_RUN_SUFFIX}"
    cluster = _clusters(out, entry)[hop]
    assert _address(cluster) == (host, 443)
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == host
    sans = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "DNS", "matcher": {"exact": host}}]
    audience = cluster["metadata"]["typed_filter_metadata"]["envoy.filters.http.gcp_authn"]
    assert audience["url"] == f"https://{host}"
    assert "health_checks" not in cluster  # the checker would send no token and get 403
    routes = _resources(out, entry, "rds")[0]["virtual_hosts"][0]["routes"]
    forwarded = [r["route"] for r in routes if "route" in r]
    assert forwarded
    assert all(r["host_rewrite_literal"] == host for r in forwarded)


@pytest.mark.parametrize("entry", ENTRIES)
def test_cloud_run_id_token_goes_in_its_own_header_after_authz(
    rendered: dict[str, Path], entry: str
) -> None:
    filters = _http_filters(rendered["cloudrun"], entry)
    names = [f["name"] for f in filters]
    assert (
        names.index("envoy.filters.http.ext_authz")
        < names.index("envoy.filters.http.gcp_authn")
        < names.index("envoy.filters.http.router")
    )
    gcp = filters[names.index("envoy.filters.http.gcp_authn")]["typed_config"]
    # Authorization keeps the client's JWT for the next hop's own check
    assert gcp["token_header"] == {"name": "x-serverless-authorization", "value_prefix": "Bearer "}
    assert gcp["cluster"] == "gcp_metadata"
    assert "http_uri" not in gcp  # deprecated in Envoy 1.40
    assert _address(_clusters(rendered["cloudrun"], entry)["gcp_metadata"]) == (
        "metadata.google.internal",
        80,
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_kubernetes_hops_use_cluster_dns_in_the_clear(
    rendered: dict[str, Path], entry: str
) -> None:
    out = rendered["kubernetes"]
    clusters = _clusters(out, entry)
    hop = clusters["backend" if entry == "plant" else "gateway_plant"]
    # CP and PP reach PLANT's internal listener (8190) through the PLANT Service
    service, port = ("backend", 8091) if entry == "plant" else ("plant", 8190)
    assert hop["type"] == "STRICT_DNS"
    assert _address(hop) == (f"gateway-{service}.gateway.svc.cluster.local", port)
    assert "transport_socket" not in hop
    assert "gcp_metadata" not in clusters
    assert "envoy.filters.http.gcp_authn" not in [f["name"] for f in _http_filters(out, entry)]


def test_kubernetes_namespace_is_a_variable(tmp_path: Path) -> None:
    out = _render(tmp_path, "kubernetes", "--var", "namespace=edge")
    assert (
        _address(_clusters(out, "cp")["gateway_plant"])[0] == "gateway-plant.edge.svc.cluster.local"
    )


def test_set_applies_after_the_target(tmp_path: Path) -> None:
    out = _render(tmp_path, "kubernetes", "--set", "upstreams.backend.host=orders.shop.svc")
    assert _address(_clusters(out, "plant")["backend"]) == ("orders.shop.svc", 8091)


def test_compose_target_uses_the_compose_service_names(rendered: dict[str, Path]) -> None:
    out = rendered["compose"]
    assert _address(_clusters(out, "cp")["gateway_plant"]) == ("envoy-plant", 8190)
    assert _address(_clusters(out, "plant")["backend"]) == ("backend", 8001)
    assert _address(_clusters(out, "plant")["authz"]) == ("authz", 9001)


def _listeners(out: Path, entry: str) -> dict[str, tuple[str, int]]:
    return {
        listener["name"]: (
            listener["address"]["socket_address"]["address"],
            listener["address"]["socket_address"]["port_value"],
        )
        for listener in _resources(out, entry, "lds")
    }


@pytest.mark.parametrize("target", ["compose", "kubernetes", "cloudrun"])
def test_the_internal_listener_is_reachable_where_the_hops_run(
    rendered: dict[str, Path], target: str
) -> None:
    """Loopback would do for make up only: elsewhere the hops run in other containers."""
    assert _listeners(rendered[target], "plant")["plant_internal"] == ("0.0.0.0", 8190)
    assert _listeners(rendered["default"], "plant")["plant_internal"] == ("127.0.0.1", 8190)


def _manifest(out: Path) -> dict[str, dict[str, Any]]:
    entries = json.loads((out / "audit" / "access_logs.json").read_text())["access_logs"]
    return {entry["name"]: entry for entry in entries}


@pytest.mark.parametrize(
    ("target", "directory"),
    [("compose", "/srv/access-logs"), ("kubernetes", "/var/run/gateway/access-logs"),
     ("cloudrun", "/var/run/gateway/access-logs")],
)  # fmt: skip
def test_each_target_puts_envoys_access_logs_in_its_shared_volume(
    rendered: dict[str, Path], target: str, directory: str
) -> None:
    manifest = _manifest(rendered[target])
    for entry in ENTRIES:
        path = f"{directory}/{entry}.log"
        assert manifest[entry]["path"] == path
        listener = _resources(rendered[target], entry, "lds")[0]
        logs = listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]
        assert path in [log["typed_config"].get("path") for log in logs]
    # a container path: render never makes it on the machine it runs on
    assert not Path(directory).exists()


def test_compose_envoys_serve_admin_on_a_socket_in_the_shared_volume(
    rendered: dict[str, Path],
) -> None:
    """The shipper runs in its own container: it reaches each Envoy's /reopen_logs there."""
    manifest = _manifest(rendered["compose"])
    for entry in ENTRIES:
        socket = f"/srv/access-logs/{entry}-admin.sock"
        assert manifest[entry]["admin"] == f"unix:{socket}"
        bootstrap = yaml.safe_load((rendered["compose"] / "envoy" / f"{entry}.yaml").read_text())
        assert bootstrap["admin"]["address"] == {"pipe": {"path": socket, "mode": 0o666}}
    # in a pod or a Cloud Run instance the shipper shares Envoy's loopback
    assert _manifest(rendered["kubernetes"])["cp"]["admin"] == "127.0.0.1:9902"


@pytest.mark.parametrize("target", ["default", "compose", "kubernetes", "cloudrun"])
def test_every_target_renders_envoys_flush_interval_for_its_launcher(
    rendered: dict[str, Path], target: str
) -> None:
    flags = (rendered[target] / "envoy" / "flags").read_text().split()
    assert flags == ["--file-flush-interval-msec", "250"]
    assert {e["file_flush_interval_ms"] for e in _manifest(rendered[target]).values()} == {250}


def _fixture_header(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}: "):
            return line.removeprefix(f"# {key}: ")
    return None


def test_there_is_one_fixture_per_invalid_target_case() -> None:
    assert len(BAD_TARGETS) >= 8


@pytest.mark.parametrize("targets_file", BAD_TARGETS, ids=[p.stem for p in BAD_TARGETS])
def test_bad_target_names_file_key_and_reason_and_writes_nothing(
    targets_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected, args = _fixture_header(targets_file, "expect"), _fixture_header(targets_file, "args")
    assert expected is not None
    assert args is not None
    named = EXAMPLE if _fixture_header(targets_file, "file") == "config" else targets_file
    out = tmp_path / "build"
    code = render.main(
        [
            "--config",
            str(EXAMPLE),
            "--out",
            str(out),
            "--targets-file",
            str(targets_file),
            *shlex.split(args),
        ]
    )
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"{named}: {expected}"), stderr
    assert not out.exists()


def test_a_tls_hop_without_id_token_is_health_checked_by_its_host_name(tmp_path: Path) -> None:
    out = _render(tmp_path, "kubernetes", "--set", "upstreams.backend.tls=true")
    backend = _clusters(out, "plant")["backend"]
    host = "gateway-backend.gateway.svc.cluster.local"
    assert backend["transport_socket"]["typed_config"]["sni"] == host
    assert backend["health_checks"][0]["http_health_check"]["host"] == host
