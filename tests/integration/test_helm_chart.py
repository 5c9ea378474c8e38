"""deploy/helm/gateway, templated by the real helm on render's kubernetes output, agrees with it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import render
from authz_service.settings import Settings
from authz_service.shipper.settings import ShipperSettings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "gateway"
ENTRIES = {"plant": 8090, "cp": 8015, "pp": 8006}
NAMESPACE = "edge"


def _helm() -> str:
    built = subprocess.run(
        [str(REPO / "tools" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if built.returncode != 0:
        pytest.fail(f"helm could not be built (tools/build-helm.sh): {built.stderr}", pytrace=False)
    return str(REPO / ".cache" / "bin" / "helm")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("helm")
    chart = base / "chart"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("rendered"))
    rendered = chart / "files" / "rendered"
    args = ["--target", "kubernetes", "--var", f"namespace={NAMESPACE}", "--out", str(rendered)]
    assert render.main([*args, "--envoy-dir", "/etc/gateway/envoy"]) == 0
    out = subprocess.run(
        [
            _helm(),
            "template",
            "gw",
            str(chart),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            "1.30.0",
            "--api-versions",
            "monitoring.coreos.com/v1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(out) if o}
    return rendered, objects


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _containers(objects: dict[str, dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    spec = objects[name]["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def _cluster_address(rendered: Path, entry: str, cluster: str) -> tuple[str, int]:
    for item in _yaml(rendered / "envoy" / entry / "cds.yaml")["resources"]:
        if item["name"] == cluster:
            socket = item["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            address = socket["address"]["socket_address"]
            return address["address"], address["port_value"]
    raise AssertionError(f"no cluster {cluster} in {entry}")


def test_every_workload_is_non_root_read_only_without_capabilities(setup: Any) -> None:
    _, objects = setup
    workloads = [o for o in objects.values() if o["kind"] in ("Deployment", "Job")]
    assert len(workloads) == 5  # plant, cp, pp, backend, migrations
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsUser"] >= 10000


@pytest.mark.parametrize("entry", ENTRIES)
def test_envoy_port_and_probes_match_the_rendered_listener(setup: Any, entry: str) -> None:
    rendered, objects = setup
    listener = _yaml(rendered / "envoy" / entry / "lds.yaml")["resources"][0]
    port = listener["address"]["socket_address"]["port_value"]
    assert port == ENTRIES[entry]
    envoy = _containers(objects, f"Deployment/gateway-{entry}")["envoy"]
    assert envoy["ports"][0] == {"name": "http", "containerPort": port}
    routes = _yaml(rendered / "envoy" / entry / "rds.yaml")["resources"][0]["virtual_hosts"][0]
    ready = next(r for r in routes["routes"] if r["name"] == "readiness")
    assert ready["direct_response"]["status"] == 200
    for probe in ("readinessProbe", "livenessProbe"):
        assert envoy[probe]["httpGet"] == {"path": ready["match"]["path"], "port": "http"}
    service = objects[f"Service/gateway-{entry}"]["spec"]["ports"][0]
    assert (service["port"], service["targetPort"]) == (port, "http")


@pytest.mark.parametrize("entry", ENTRIES)
def test_authz_sidecar_listens_where_render_sends_envoy(setup: Any, entry: str) -> None:
    rendered, objects = setup
    host, port = _cluster_address(rendered, entry, "authz")
    authz = _containers(objects, f"Deployment/gateway-{entry}")["authz"]
    env = {e["name"]: e.get("value") for e in authz["env"]}
    assert env["AUTHZ_GRPC_ADDRESS"] == f"{host}:{port}"
    # the probe is the image's gRPC health check, which the app image really carries
    command = authz["readinessProbe"]["exec"]["command"]
    assert command == ["python3", "/usr/local/lib/gateway/healthcheck.py"]
    dockerfile = (REPO / "deploy" / "images" / "app.Dockerfile").read_text()
    assert "COPY deploy/images/healthcheck.py /usr/local/lib/gateway/healthcheck.py" in dockerfile
    mounts = {m["mountPath"] for m in authz["volumeMounts"]}
    assert str(Path(env["AUTHZ_RUNTIME_CONFIG"]).parent) in mounts


@pytest.mark.parametrize(
    ("entry", "cluster", "service"),
    [
        ("cp", "gateway_plant", "gateway-plant"),
        ("pp", "gateway_plant", "gateway-plant"),
        ("plant", "backend", "gateway-backend"),
    ],
)
def test_hops_reach_the_charts_services_by_cluster_dns(
    setup: Any, entry: str, cluster: str, service: str
) -> None:
    rendered, objects = setup
    host, port = _cluster_address(rendered, entry, cluster)
    assert host == f"{service}.{NAMESPACE}.svc.cluster.local"
    assert objects[f"Service/{service}"]["metadata"]["namespace"] == NAMESPACE
    assert port in [p["port"] for p in objects[f"Service/{service}"]["spec"]["ports"]]


def test_backend_probe_is_its_health_route(setup: Any) -> None:
    _, objects = setup
    backend = _containers(objects, "Deployment/gateway-backend")["backend"]
    assert backend["readinessProbe"]["httpGet"]["path"] == "/health"
    assert 'add_get("/health", health)' in (REPO / "backend" / "app.py").read_text()


def test_config_maps_carry_the_rendered_files(setup: Any) -> None:
    rendered, objects = setup
    for entry in ENTRIES:
        data = objects[f"ConfigMap/gateway-{entry}-envoy"]["data"]
        assert data["lds.yaml"] == (rendered / "envoy" / entry / "lds.yaml").read_text()
        assert data["bootstrap.yaml"] == (rendered / "envoy" / f"{entry}.yaml").read_text()
    runtime = objects["ConfigMap/gateway-authz-runtime"]["data"]["runtime.json"]
    assert runtime == (rendered / "authz" / "runtime.json").read_text()


def test_migrations_run_before_install_and_upgrade(setup: Any) -> None:
    _, objects = setup
    job = objects["Job/gateway-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "alembic",
        "upgrade",
        "head",
    ]


def test_metrics_are_scraped_and_scaling_is_bounded(setup: Any) -> None:
    _, objects = setup
    monitor = objects["ServiceMonitor/gateway-authz"]["spec"]["endpoints"][0]
    assert monitor["port"] == "metrics"
    for entry in ENTRIES:
        assert objects[f"HorizontalPodAutoscaler/gateway-{entry}"]["spec"]["maxReplicas"] >= 2
        assert objects[f"PodDisruptionBudget/gateway-{entry}"]["spec"]["minAvailable"] == 1
        assert "NetworkPolicy/gateway-" + entry in objects


def test_a_chart_without_a_render_says_what_to_run(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("rendered"))
    result = subprocess.run(
        [_helm(), "template", "gw", str(chart), "--kube-version", "1.30.0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "make helm-render" in result.stderr


def _env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the secret key a value comes from."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def _secret_key(value: Any) -> str:
    return str(value["secretKeyRef"]["key"])


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_shipper_reads_the_paths_envoy_and_authz_write(setup: Any, entry: str) -> None:
    """One volume each: Envoy's access log (render's path) and authz's journal; the shipper
    mounts both where it reads them, and render's manifest (its own Envoy's entry only)."""
    rendered, objects = setup
    pod = objects[f"Deployment/gateway-{entry}"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    envoy, authz, shipper = containers["envoy"], containers["authz"], containers["shipper"]
    listener = _yaml(rendered / "envoy" / entry / "lds.yaml")["resources"][0]
    logs = listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]
    (written,) = [log["typed_config"]["path"] for log in logs if log["name"].endswith(".file")]
    log_dir = str(Path(written).parent)
    assert _mounts(envoy)["access-logs"] == _mounts(shipper)["access-logs"] == log_dir
    shipper_env, authz_env = _env(shipper), _env(authz)
    journal = authz_env["AUTHZ_AUDIT_JOURNAL_DIR"]
    assert shipper_env["AUTHZ_SHIPPER_JOURNAL_DIR"] == journal
    assert _mounts(authz)["audit-journal"] == _mounts(shipper)["audit-journal"] == journal
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name in ("access-logs", "audit-journal"):
        assert volumes[name]["emptyDir"]["medium"] == "Memory"
    # the manifest it reads is render's, and names the file Envoy writes
    manifest_path = Path(shipper_env["AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST"])
    assert _mounts(shipper)["audit-manifest"] == str(manifest_path.parent)
    config_map = volumes["audit-manifest"]["configMap"]["name"]
    manifest = json.loads(objects[f"ConfigMap/{config_map}"]["data"][manifest_path.name])
    assert manifest == json.loads((rendered / "audit" / "access_logs.json").read_text())
    (own,) = [e for e in manifest["access_logs"] if e["name"] == shipper_env[
        "AUTHZ_SHIPPER_ACCESS_LOGS"]]  # fmt: skip
    assert own["path"] == written
    # its admin is the pod's loopback, where this Envoy's bootstrap puts it
    admin = _yaml(rendered / "envoy" / f"{entry}.yaml")["admin"]["address"]["socket_address"]
    assert own["admin"] == f"{admin['address']}:{admin['port_value']}"
    # the journal's bound fails closed before its in-memory volume is full
    limit = int(volumes["audit-journal"]["emptyDir"]["sizeLimit"].removesuffix("Mi")) << 20
    assert int(authz_env["AUTHZ_AUDIT_JOURNAL_MAX_BYTES"]) < limit
    # every setting is a real one of the service it is given to
    assert {k for k in shipper_env if k.startswith("AUTHZ_")} <= {
        f"AUTHZ_SHIPPER_{n.upper()}" for n in ShipperSettings.model_fields
    }
    known = {f"AUTHZ_{n.upper()}" for n in Settings.model_fields} | {"AUTHZ_WORKERS"}
    assert {k for k in authz_env if k.startswith("AUTHZ_")} <= known


@pytest.mark.parametrize("entry", ENTRIES)
def test_envoy_runs_with_renders_flags(setup: Any, entry: str) -> None:
    rendered, objects = setup
    flags = objects[f"ConfigMap/gateway-{entry}-envoy"]["data"]["flags"]
    assert flags == (rendered / "envoy" / "flags").read_text()
    assert flags.split() == ["--file-flush-interval-msec", "250"]
    pod = objects[f"Deployment/gateway-{entry}"]["spec"]["template"]["spec"]
    items = next(v for v in pod["volumes"] if v["name"] == "envoy-config")["configMap"]["items"]
    assert {"key": "flags", "path": "flags"} in items  # beside the bootstrap: the entrypoint's
    entrypoint = (REPO / "deploy" / "images" / "gateway-envoy.sh").read_text()
    assert "flags_file=/etc/gateway/envoy/flags" in entrypoint


def test_only_the_shipper_and_the_jobs_hold_database_logins(setup: Any) -> None:
    _, objects = setup
    for entry in ENTRIES:
        containers = _containers(objects, f"Deployment/gateway-{entry}")
        assert not [k for k in _env(containers["authz"]) if "DATABASE" in k]
        assert not [k for k in _env(containers["envoy"]) if "DATABASE" in k]
        shipper = _env(containers["shipper"])
        assert _secret_key(shipper["AUTHZ_SHIPPER_DATABASE_URL"]) == "shipperDatabaseUrl"
        assert _secret_key(shipper["AUTHZ_SHIPPER_RETENTION_DATABASE_URL"]) == (
            "retentionDatabaseUrl"
        )
    migrate = objects["Job/gateway-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert _secret_key(_env(migrate)["AUTHZ_DATABASE_URL"]) == "migrationsDatabaseUrl"
    backend = _containers(objects, "Deployment/gateway-backend")["backend"]
    assert _secret_key(_env(backend)["BACKEND_DATABASE_URL"]) == "backendDatabaseUrl"


def test_plants_internal_listener_is_a_service_port_only_cp_and_pp_reach(setup: Any) -> None:
    rendered, objects = setup
    internal = next(
        item for item in _yaml(rendered / "envoy" / "plant" / "lds.yaml")["resources"]
        if item["name"] == "plant_internal"
    )  # fmt: skip
    port = internal["address"]["socket_address"]["port_value"]
    assert _cluster_address(rendered, "cp", "gateway_plant")[1] == port  # where the hop goes
    envoy = _containers(objects, "Deployment/gateway-plant")["envoy"]
    assert {"name": "internal", "containerPort": port} in envoy["ports"]
    service = {p["name"]: p for p in objects["Service/gateway-plant"]["spec"]["ports"]}
    assert (service["internal"]["port"], service["internal"]["targetPort"]) == (port, "internal")
    for entry in ("cp", "pp"):  # only PLANT has one
        assert "internal" not in {p["name"] for p in objects[f"Service/gateway-{entry}"]["spec"][
            "ports"]}  # fmt: skip
    ingress = objects["NetworkPolicy/gateway-plant"]["spec"]["ingress"]
    (rule,) = [r for r in ingress if {"port": port, "protocol": "TCP"} in r["ports"]]
    components = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                  for p in rule["from"]}  # fmt: skip
    assert components == {"gateway-cp", "gateway-pp"}
    public = [r for r in ingress if {"port": 8090, "protocol": "TCP"} in r["ports"]]
    assert all("podSelector" not in peer for r in public for peer in r["from"]), public
    for entry in ("cp", "pp"):
        egress = objects[f"NetworkPolicy/gateway-{entry}"]["spec"]["egress"]
        assert any({"port": port, "protocol": "TCP"} in r.get("ports", []) for r in egress)
