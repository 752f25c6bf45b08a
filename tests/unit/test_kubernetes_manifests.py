"""deploy/kubernetes/: every manifest valid against the Kubernetes API's own JSON schemas
(kubernetes-validate bundles them: no cluster, no network), and consistent with the configs
they carry, read by the project's config loader: probe paths and ports, Service ports, the
grace period against shutdown_timeout and the preStop sleep, the agent's spool on the node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from telemetry.config import AgentConfig, CollectorConfig, SystemSourceConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes still supported upstream when this was written, and the newest known.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def resource(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def config_from(configmap: str, key: str, model: type[Any], tmp_path: Path) -> Any:
    path = tmp_path / key
    path.write_text(resource("ConfigMap", configmap)["data"][key])
    return load_config(model, path)


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def port(c: dict[str, Any], ref: int | str) -> int:
    """A probe's or a Service's port, by number or by the container port's name."""
    if isinstance(ref, int):
        return ref
    [number] = [p["containerPort"] for p in c["ports"] if p["name"] == ref]
    return int(number)


def pre_stop_seconds(c: dict[str, Any]) -> float:
    pre_stop = c["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TELEMETRY_") and "__" in name:
            monkeypatch.delenv(name)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_api_schema(version: str) -> None:
    kinds = []
    for filename, doc in documents():
        if doc["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field
        kinds.append(doc["kind"])
        assert doc["metadata"]["name"].startswith("telemetry-"), filename
    assert sorted(kinds) == sorted(
        ["ConfigMap", "ConfigMap", "DaemonSet", "Deployment", "PodDisruptionBudget", "Service"]
    )


def test_the_kustomization_lists_every_manifest() -> None:
    [(_, kustomization)] = [(f, d) for f, d in documents() if d["kind"] == "Kustomization"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_the_collector_s_probes_ports_and_drain_match_its_config(tmp_path: Path) -> None:
    config: CollectorConfig = config_from(
        "telemetry-collector", "collector.toml", CollectorConfig, tmp_path
    )
    deployment = resource("Deployment", "telemetry-collector")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment, "collector")
    assert c["args"] == ["collect", "--config", "/etc/telemetry/collector.toml"]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == "/etc/telemetry"
    assert (port(c, "ingest"), port(c, "http")) == (config.ingest.port, config.http.port)
    assert config.ingest.host == config.http.host == "0.0.0.0"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert (get["path"], port(c, get["port"])) == (path, config.http.port), probe
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # SIGKILL never cuts a drain short: the preStop sleep, then shutdown_timeout, fit.
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pre_stop_seconds(c) + config.collector.shutdown_timeout
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = resource("Service", "telemetry-collector")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: (p["port"], port(c, p["targetPort"])) for p in service["spec"]["ports"]}
    assert ports == {"ingest": (7600, config.ingest.port), "http": (7601, config.http.port)}

    pdb = resource("PodDisruptionBudget", "telemetry-collector")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_the_agent_daemonset_reads_the_host_and_spools_on_the_node(tmp_path: Path) -> None:
    config: AgentConfig = config_from("telemetry-agent", "agent.toml", AgentConfig, tmp_path)
    assert [type(s) for s in config.sources] == [SystemSourceConfig]
    daemonset = resource("DaemonSet", "telemetry-agent")
    pod = daemonset["spec"]["template"]["spec"]
    c = container(daemonset, "agent")
    assert c["args"] == ["agent", "--config", "/etc/telemetry/agent.toml"]
    assert pod["terminationGracePeriodSeconds"] > config.agent.shutdown_timeout
    # The spool file lies on a hostPath volume: it outlives the pod.
    assert config.spool.path is not None
    spool = Path(config.spool.path)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "hostPath" in volumes[mounts[str(spool.parent)]]
    [spool_mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(spool.parent)]
    assert not spool_mount.get("readOnly")
    # Each disk the system source reads is mounted from the host.
    for disk in config.sources[0].disks:  # type: ignore[union-attr]
        assert "hostPath" in volumes[mounts[disk]], disk
    # The endpoint is the collector Service's ingest port.
    service = resource("Service", "telemetry-collector")
    [ingest] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "ingest"]
    assert config.agent.endpoints == [f"{service['metadata']['name']}:{ingest}"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TELEMETRY_AGENT__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
