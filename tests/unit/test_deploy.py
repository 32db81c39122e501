"""The shipped deployment examples stay valid: their environment-only configs load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _watcher_containers(path: Path) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text()):
        spec = doc.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        containers += [c for c in pod.get("containers", []) if c["name"] == "watcher"]
    return containers


@pytest.mark.parametrize("example", ["sidecar.yaml", "cronjob.yaml"])
def test_the_kubernetes_examples_configure_the_watcher_from_the_environment_alone(
    example: str, tmp_path: Path
) -> None:
    [container] = _watcher_containers(ROOT / "deploy" / "kubernetes" / example)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "webhook-secret").write_text("a-webhook-secret\n")
    (secrets / "metrics-token").write_text("a-token\n")
    env = {
        e["name"]: e["value"].replace("/run/secrets/mlflow-watcher", str(secrets))
        for e in container["env"]
    }
    config = load_config(None, env)
    assert config.webhooks[0].secret is not None
    assert config.state.path == Path("/var/lib/mlflow-watcher/state.db")
    if example == "sidecar.yaml":
        assert config.server.listen == ("0.0.0.0", 9464)  # noqa: S104
        assert config.server.metrics_token is not None
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert ports["metrics"] == 9464


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    """The manifests of one file by kind (one of each)."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text())}


def test_the_replicas_example_shares_a_postgresql_state_from_its_secret(tmp_path: Path) -> None:
    docs = _documents(ROOT / "deploy" / "kubernetes" / "replicas.yaml")
    secret = docs["Secret"]["stringData"]
    [container] = _watcher_containers(ROOT / "deploy" / "kubernetes" / "replicas.yaml")
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    for key in ("state-password", "webhook-secret", "metrics-token", "console-token"):
        (mounted / key).write_text(f"{key}-value\n")
    env: dict[str, str] = {}
    for e in container["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == docs["Secret"]["metadata"]["name"]
            env[e["name"]] = secret[ref["key"]]
        else:
            env[e["name"]] = e["value"].replace("/run/secrets/mlflow-watcher", str(mounted))
    config = load_config(None, env)

    assert config.state.shared
    assert config.state.url == secret["state-url"]
    assert config.state.namespace == "mlflow_watcher"
    assert config.state.password is not None
    assert config.state.password.reveal() == "state-password-value"
    assert config.webhooks[0].secret is not None
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v], "no state volume"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] == 1
    # Every replica serves the console, behind one Service, signing in with a token file.
    assert config.console.listen == ("0.0.0.0", 9470)  # noqa: S104
    assert config.console.token is not None
    assert config.console.token.reveal() == "console-token-value"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = docs["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == ["console"]
    assert ports["console"] == 9470
