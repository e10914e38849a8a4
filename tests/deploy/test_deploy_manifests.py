"""deploy/: the compose file, the Dockerfiles and the Kubernetes manifests are valid and consistent
with each other, with the dashboards' provisioning and with the collector's settings."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.33.0"


class _ComposeLoader(yaml.SafeLoader):
    """Compose's YAML: plain YAML plus the ``!reset`` / ``!override`` merge tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else None,
)


def _compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.load((DEPLOY / name).read_text(), Loader=_ComposeLoader)


@functools.cache
def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every manifest under deploy/kubernetes (parsed once; callers must not modify them)."""
    documents = []
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") != "Kustomization":
                documents.append((path, document))
    return documents


def _compose_binary() -> list[str] | None:
    """Compose v2 (the docker CLI plugin or the standalone binary); v1 lacks ``name:`` and ``!reset``."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def test_docker_compose_config_accepts_the_files(tmp_path: Path) -> None:
    command = _compose_binary()
    if command is None:
        pytest.skip(
            "no Compose v2 here: the docker CLI has no compose plugin and there is no docker-compose v2"
        )
    env_file = tmp_path / ".env"
    env_file.write_text("CLICKHOUSE_PASSWORD=a\nCLICKHOUSE_GRAFANA_PASSWORD=b\nGRAFANA_ADMIN_PASSWORD=c\n")
    for extra in ([], ["-f", str(DEPLOY / "docker-compose.cpu.yml")]):
        result = subprocess.run(
            [
                *command,
                "--env-file",
                str(env_file),
                "-f",
                str(DEPLOY / "docker-compose.yml"),
                *extra,
                "config",
                "-q",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


def test_compose_services_wiring() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"clickhouse", "migrate", "collector", "grafana"}
    collector = services["collector"]
    env = collector["environment"]
    assert (
        env["VEIL_CLICKHOUSE_DSN"].startswith("http://") and "@clickhouse:8123/" in env["VEIL_CLICKHOUSE_DSN"]
    )
    assert any(v.startswith("spool:") and v.endswith(env["VEIL_SPOOL_DIR"]) for v in collector["volumes"])
    assert "spool" in compose["volumes"]
    (device,) = collector["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "/readyz" in " ".join(collector["healthcheck"]["test"])
    assert collector["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["environment"]["VEIL_CLICKHOUSE_DSN"] == env["VEIL_CLICKHOUSE_DSN"]
    for name in ("clickhouse", "grafana"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_grafana_mounts_the_provisioning_grafana_expects() -> None:
    grafana = _compose()["services"]["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    mounts = {
        source: target.removesuffix(":ro") for source, target in (v.split(":", 1) for v in grafana["volumes"])
    }
    assert mounts["../dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["../dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/veil.yaml").read_text())[
        "providers"
    ][0]
    assert mounts["../dashboards/json"] == provider["options"]["path"]
    datasource = (ROOT / "dashboards/provisioning/datasources/veil.yaml").read_text()
    for name in set(re.findall(r"\$\{(\w+)\}", datasource)):
        assert name in grafana["environment"], f"Grafana's environment does not set {name}"
    for source in mounts:
        assert source in _compose()["volumes"] or (DEPLOY / source).exists(), source


def test_compose_cpu_override_drops_the_gpu() -> None:
    override = _compose("docker-compose.cpu.yml")["services"]
    assert override["collector"]["deploy"] is None  # !reset
    assert override["collector"]["build"]["dockerfile"] == "deploy/docker/collector.Dockerfile"
    assert override["migrate"]["image"] == override["collector"]["image"]


@pytest.mark.parametrize("name", ["collector.Dockerfile", "collector-cuda.Dockerfile"])
def test_dockerfiles_install_the_collector_extra_after_torch(name: str) -> None:
    text = (DEPLOY / "docker" / name).read_text()
    torch = text.index("pip install torch==2.13.0")
    assert torch < text.index("pip install '.[collector]'")
    if name == "collector.Dockerfile":
        assert "--index-url https://download.pytorch.org/whl/cpu" in text
    else:
        assert "nvidia/cuda:" in text and "VEIL_CLASSIFIER_DEVICE=cuda" in text
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert (ROOT / source).exists(), f"{name} copies {source}, which is not in the repository"
    for keep in re.findall(
        r"^!(\S+)", (DEPLOY / "docker" / f"{name}.dockerignore").read_text(), re.MULTILINE
    ):
        assert (ROOT / keep).exists(), keep
    assert 'ENTRYPOINT ["veil"]' in text and "VEIL_HOST=0.0.0.0" in text


@pytest.mark.parametrize(
    ("path", "document"),
    _k8s_documents(),
    ids=lambda v: v.name if isinstance(v, Path) else v["metadata"]["name"],
)
def test_kubernetes_manifest_passes_schema_validation(path: Path, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _k8s_documents() if d["kind"] == kind}


def test_collector_deployment_probes_gpu_service_and_hpa() -> None:
    deployment = _by_kind("Deployment")["veil-collector"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert env["VEIL_CLICKHOUSE_DSN"]["valueFrom"]["secretKeyRef"]["name"] == "veil-clickhouse"
    assert env["VEIL_HOST"]["value"] == "0.0.0.0"
    port = container["ports"][0]
    service = _by_kind("Service")["veil-collector"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"] and port["containerPort"] == 4318
    hpa = _by_kind("HorizontalPodAutoscaler")["veil-collector"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "veil-collector",
    }


def test_grafana_configmaps_carry_the_provisioning_files() -> None:
    maps = _by_kind("ConfigMap")
    assert maps["veil-grafana-dashboards"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(maps["veil-grafana-dashboards"]["data"]) == {
        p.name for p in (ROOT / "dashboards/json").glob("*.json")
    }
    datasource = maps["veil-grafana-datasource"]["data"]["veil.yaml"]
    assert datasource == (ROOT / "dashboards/provisioning/datasources/veil.yaml").read_text()


def _kustomization_resources(folder: Path) -> set[Path]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        for file in generator["files"]:
            assert (folder / file).is_file(), file
    return {(folder / r).resolve() for r in kustomization["resources"]}


def test_kustomizations_list_every_manifest_but_the_secret_examples() -> None:
    listed = _kustomization_resources(K8S) | _kustomization_resources(K8S / "clickhouse")
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests - listed == {p.resolve() for p in K8S.rglob("secret.example.yaml")}
    assert listed <= manifests


def _cluster_config() -> ET.Element:
    return ET.parse(K8S / "clickhouse/config/cluster.xml").getroot()


def test_cluster_topology_matches_the_statefulsets() -> None:
    statefulsets = _by_kind("StatefulSet")
    servers, keepers = statefulsets["clickhouse"], statefulsets["clickhouse-keeper"]
    (cluster,) = _cluster_config().find("remote_servers")
    assert cluster.tag == "veil"
    hosts = [
        replica.findtext("host") for shard in cluster.findall("shard") for replica in shard.findall("replica")
    ]
    service = servers["spec"]["serviceName"]
    assert hosts == [
        f"clickhouse-{i}.{service}.veil.svc.cluster.local" for i in range(servers["spec"]["replicas"])
    ]
    assert [len(s.findall("replica")) for s in cluster.findall("shard")] == [2, 2]
    keeper_hosts = [node.findtext("host") for node in _cluster_config().find("zookeeper")]
    raft = ET.parse(K8S / "clickhouse/config/keeper.xml").getroot().find("keeper_server/raft_configuration")
    assert [s.findtext("hostname") for s in raft] == keeper_hosts
    assert len(keeper_hosts) == keepers["spec"]["replicas"] == 3
    job = _by_kind("Job")["veil-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate", "--cluster", cluster.tag]


def _pod_script(statefulset: str) -> str:
    (container,) = _by_kind("StatefulSet")[statefulset]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/bash", "-c"]
    return container["args"][0].replace("$$", "$")  # Kubernetes turns $$ into a literal $


@pytest.mark.parametrize(
    ("pod", "shard"), [("clickhouse-0", "01"), ("clickhouse-1", "01"), ("clickhouse-3", "02")]
)
def test_server_start_script_derives_the_shard_from_the_ordinal(pod: str, shard: str) -> None:
    script = _pod_script("clickhouse").replace("exec /entrypoint.sh", 'echo "$CLICKHOUSE_SHARD"')
    result = subprocess.run(["bash", "-c", script], env={"POD_NAME": pod}, capture_output=True, text=True)
    assert result.stdout.strip() == shard, result.stderr
    shards = [s for s in _cluster_config().find("remote_servers/veil") if s.tag == "shard"]
    index = int(pod.rsplit("-", 1)[1])
    assert pod in shards[int(shard) - 1].findall("replica")[index % 2].findtext("host")


def test_keeper_start_script_numbers_servers_from_one() -> None:
    script = re.sub(
        r"exec clickhouse-keeper .*", 'echo "$KEEPER_SERVER_ID"', _pod_script("clickhouse-keeper")
    )
    ids = [
        subprocess.run(
            ["bash", "-c", script], env={"HOSTNAME": f"clickhouse-keeper-{i}"}, capture_output=True, text=True
        ).stdout.strip()
        for i in range(3)
    ]
    raft = ET.parse(K8S / "clickhouse/config/keeper.xml").getroot().find("keeper_server/raft_configuration")
    assert ids == [s.findtext("id") for s in raft]


def test_grafana_clickhouse_user_reads_the_dashboards_tables_but_not_secrets(store: Any) -> None:
    user = ET.parse(DEPLOY / "clickhouse/users.d/grafana.xml").getroot().find("users/grafana")
    assert user is not None
    # ClickHouse refuses `grants` next to `allow_databases`: the grants alone scope the user.
    assert user.find("allow_databases") is None
    queries = [q.text or "" for q in user.findall("grants/query")]
    assert queries[0] == "GRANT SELECT ON veil.*"
    revoked = {q.removeprefix("REVOKE SELECT ON veil.") for q in queries[1:]}
    assert revoked == {"alert_rules", "api_keys"}
    # Each one parses with ClickHouse's own parser (the user's own grants carry no grantee in XML).
    for query in queries:
        grantee = " TO grafana" if query.startswith("GRANT") else " FROM grafana"
        parsed = store.query("SELECT formatQuery({q:String})", parameters={"q": query + grantee})
        assert parsed.result_rows[0][0] == query + grantee
    # Every table the dashboards read stays readable; the revoked ones are real tables of the schema.
    tables = {
        row[0]
        for row in store.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    assert revoked <= tables
    dashboards = " ".join(p.read_text() for p in (ROOT / "dashboards/json").glob("*.json"))
    assert not any(re.search(rf"\b{name}\b", dashboards) for name in revoked)
