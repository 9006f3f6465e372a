"""Deployment files, validated without a cluster: Kubernetes manifests against the API schemas
(kubernetes-validate, strict), the compose file against the Compose specification
(check-jsonschema's vendored schema), Prometheus and Alertmanager configs with promtool and
amtool, raiwatch settings with raiwatch's own loader, and every file a manifest names exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from raiwatch.core.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid_objects(path):
    for doc in _docs(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_worker_deployment_probes_ports_and_config_match_the_worker(tmp_path):
    docs = {d["kind"]: d for p in K8S for d in _docs(p)}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    default = Config().metrics
    assert c["ports"] == [{"name": "metrics", "containerPort": default.port}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    secrets = {e["name"] for e in c["env"] if "valueFrom" in e}
    assert {"RAIWATCH_CLICKHOUSE_DSN", "RAIWATCH_INCIDENT_DB"} <= secrets  # never in the ConfigMap
    config = tmp_path / "raiwatch.yaml"
    config.write_text(docs["ConfigMap"]["data"]["raiwatch.yaml"])
    cfg = load_config(config)  # unknown or wrong settings are refused here
    assert cfg.kafka.partitions >= docs["Deployment"]["spec"]["replicas"]
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["config"]
    assert c["args"][c["args"].index("--config") + 1] == f"{mount}/raiwatch.yaml"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_compose_stack_is_valid_and_names_only_files_that_exist():
    compose = DEPLOY / "compose" / "docker-compose.yaml"
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    assert {"kafka", "clickhouse", "postgres", "worker", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (compose.parent / source).exists(), f"{name}: {source}"
    build = services["worker"]["build"]
    assert (compose.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    load_config(compose.parent / "raiwatch.yaml")


def test_the_dockerfile_copies_what_exists_and_exposes_the_metrics_port():
    text = (DEPLOY / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):  # (not a build stage's)
        for name in src.split():
            assert (ROOT / name).exists(), name
    assert f"EXPOSE {Config().metrics.port}" in text
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    assert "RUN cd /src/otlpmap && go build -buildmode=c-shared" in text  # libotlpmap, as make install
    packages = {"raiwatch", "streams", "monitors", "detectors", "alert_rules", "storage", "dashboards"}
    assert packages <= copied  # every package pyproject installs


def test_metrics_listen_on_loopback_unless_a_deploy_file_opens_them_to_prometheus(tmp_path):
    """/metrics has no authentication and names models: 127.0.0.1 by default; each deployment
    whose Prometheus (or kubelet probes) come from another host says 0.0.0.0 itself."""
    assert Config().metrics.host == "127.0.0.1"
    assert load_config(DEPLOY / "raiwatch.example.yaml").metrics.host == "127.0.0.1"
    configmap = next(d for p in K8S for d in _docs(p) if d["kind"] == "ConfigMap")
    (tmp_path / "k8s.yaml").write_text(configmap["data"]["raiwatch.yaml"])
    image = DEPLOY / "raiwatch.image.yaml"
    for path in (tmp_path / "k8s.yaml", DEPLOY / "compose" / "raiwatch.yaml", image):
        assert load_config(path).metrics.host == "0.0.0.0", path.name
    # the image's own settings are where its default command reads them
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (.+)$", text, flags=re.M).group(1))
    config = cmd[cmd.index("--config") + 1]
    assert f"COPY deploy/{image.name} {config}" in text


@pytest.mark.parametrize(
    ("tool", "args", "path"),
    [
        ("promtool", ["check", "config"], "compose/prometheus.yml"),
        ("amtool", ["check-config"], "compose/alertmanager.yml"),
    ],
)
def test_prometheus_and_alertmanager_configs_pass_their_own_checks(tool, args, path):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (deploy/system-deps.sh installs it)")
    p = subprocess.run([tool, *args, str(DEPLOY / path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_grafana_provisioning_points_at_the_generated_dashboards():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards.yaml").read_text())
    (p,) = provider["providers"]
    assert mounts["../../dashboards"] == p["options"]["path"]
    sources = yaml.safe_load((DEPLOY / "compose" / "grafana" / "datasources.yaml").read_text())
    assert {d["type"] for d in sources["datasources"]} == {"prometheus", "grafana-clickhouse-datasource"}
