"""Every format and signature scheme, delivered over the network from a real registry change.

Signatures are checked with independent verifiers: the `standardwebhooks` package for the
Standard Webhooks scheme, and the documented recipes of MLflow, Databricks and GitHub written
out here, never the watcher's own code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from standardwebhooks import Webhook

from tests.e2e.conftest import create_versions
from tests.e2e.harness import MlflowServer, Receiver, hooks_config, run_watcher, watcher_env

STANDARD_KEY = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SECRETS = {
    "HOOK_SECRET": "plain-shared-secret",
    "STANDARD_SECRET": STANDARD_KEY,
    "GITLAB_TOKEN": "glptt-trigger-token",
    "JENKINS_TOKEN": "jenkins-build-token",
    "JENKINS_API_TOKEN": "jenkins-api-token",
    "GH_TOKEN": "ghp_example",
}
EVENTS = ["MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_ALIAS_CREATED"]
WEBHOOKS: list[dict[str, Any]] = [
    {"name": "plain", "secret_env": "HOOK_SECRET"},
    {"name": "standard", "signature": "standard", "secret_env": "STANDARD_SECRET"},
    {
        "name": "databricks",
        "format": "databricks",
        "signature": "databricks",
        "secret_env": "HOOK_SECRET",
    },
    {"name": "mlflow", "format": "mlflow", "secret_env": "HOOK_SECRET"},
    {
        "name": "github",
        "format": "github",
        "event_type": "model_changed",
        "signature": "github",
        "secret_env": "HOOK_SECRET",
        "headers": {"Authorization": "Bearer ${GH_TOKEN}", "Accept": "application/vnd.github+json"},
    },
    {"name": "gitlab", "format": "gitlab", "ref": "release", "secret_env": "GITLAB_TOKEN"},
    {
        "name": "jenkins",
        "format": "jenkins",
        "secret_env": "JENKINS_TOKEN",
        "username": "ci-bot",
        "password_env": "JENKINS_API_TOKEN",
    },
    {"name": "slack", "format": "slack"},
    {
        "name": "template",
        "format": "template",
        "content_type": "text/plain",
        "template": "{{ event.event }} {{ model_name }}/{{ model_version }}",
    },
]
"""One webhook of each format and signature scheme, each on its own path of the receiver."""


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_each_format_lands_as_its_target_expects(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    create_versions(client, model_name, 2)
    config = hooks_config(
        tmp_path / "watcher.toml",
        tracking_uri=mlflow_server.url,
        state=tmp_path / "state.db",
        models=model_name,
        webhooks=[
            {"name": hook["name"], "url": f"{receiver.base_url}/{hook['name']}", "events": EVENTS}
            | hook
            for hook in WEBHOOKS
        ],
    )
    env = watcher_env(SECRETS)
    assert run_watcher("run", "--once", "-c", str(config), env=env).returncode == 0

    client.transition_model_version_stage(model_name, "1", "Production")
    client.set_registered_model_alias(model_name, "champion", "2")
    result = run_watcher("run", "--once", "--verbose", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr

    by_path: dict[str, list[Any]] = {}
    for delivery in receiver.deliveries():
        by_path.setdefault(delivery.path, []).append(delivery)
    assert {path: len(items) for path, items in by_path.items()} == {
        f"/{hook['name']}": 2 for hook in WEBHOOKS
    }

    # mlflow signature (the default with a secret), MLflow's documented recipe.
    for d in by_path["/plain"]:
        signed = f"{d.header('X-MLflow-Delivery-Id')}.{d.header('X-MLflow-Timestamp')}.".encode()
        expected = base64.b64encode(
            hmac.new(b"plain-shared-secret", signed + d.body, hashlib.sha256).digest()
        ).decode()
        assert d.header("X-MLflow-Signature") == f"v1,{expected}"

    # Standard Webhooks, verified by the reference package.
    for d in by_path["/standard"]:
        payload = Webhook(STANDARD_KEY).verify(d.body, d.headers)
        assert payload["model_name"] == model_name

    # Databricks: field names and lowercase hex HMAC of the body.
    bodies = {}
    for d in by_path["/databricks"]:
        assert d.header("X-Databricks-Signature") == hmac_hex("plain-shared-secret", d.body)
        bodies[d.json["event"]] = d.json
    stage = bodies["MODEL_VERSION_TRANSITIONED_STAGE"]
    assert stage["model_name"] == model_name
    assert (stage["version"], stage["from_stage"], stage["to_stage"]) == ("1", "None", "Production")
    assert {"webhook_id", "event_timestamp", "text"} <= stage.keys()
    assert bodies["MODEL_VERSION_ALIAS_CREATED"]["alias"] == "champion"

    # MLflow 3 native envelope.
    envelopes = {(d.json["entity"], d.json["action"]): d.json for d in by_path["/mlflow"]}
    alias = envelopes[("model_version_alias", "created")]
    assert alias["data"] == {"name": model_name, "alias": "champion", "version": "2"}
    transition = envelopes[("model_version", "stage_transitioned")]
    assert transition["data"]["to_stage"] == "Production"
    assert datetime.fromisoformat(alias["timestamp"]).tzinfo is not None

    # GitHub repository_dispatch: event_type, at most 10 client_payload keys, its own signature.
    for d in by_path["/github"]:
        assert d.header("X-Hub-Signature-256") == "sha256=" + hmac_hex(
            "plain-shared-secret", d.body
        )
        assert d.header("Authorization") == "Bearer ghp_example"
        assert d.header("Accept") == "application/vnd.github+json"
        assert set(d.json) == {"event_type", "client_payload"}
        assert d.json["event_type"] == "model_changed"
        assert len(d.json["client_payload"]) <= 10
        assert d.json["client_payload"]["model_name"] == model_name

    # GitLab pipeline trigger: a form with the token, the ref and variables[...].
    forms = [parse_qs(d.body.decode()) for d in by_path["/gitlab"]]
    for d in by_path["/gitlab"]:
        assert d.header("Content-Type") == "application/x-www-form-urlencoded"
    for form in forms:
        assert form["token"] == ["glptt-trigger-token"]
        assert form["ref"] == ["release"]
        assert form["variables[MODEL_NAME]"] == [model_name]
    assert sorted(f["variables[EVENT]"][0] for f in forms) == [
        "MODEL_VERSION_ALIAS_CREATED",
        "MODEL_VERSION_TRANSITIONED_STAGE",
    ]

    # Jenkins buildWithParameters: a form of parameters plus the build token, basic auth.
    basic = "Basic " + base64.b64encode(b"ci-bot:jenkins-api-token").decode()
    for d in by_path["/jenkins"]:
        assert d.header("Authorization") == basic
        form = parse_qs(d.body.decode())
        assert form["token"] == ["jenkins-build-token"]
        assert form["MODEL_NAME"] == [model_name]
        if form["EVENT"] == ["MODEL_VERSION_TRANSITIONED_STAGE"]:
            assert form["TO_STAGE"] == ["Production"]
            assert form["MODEL_VERSION"] == ["1"]

    # Slack: a readable sentence.
    texts = sorted(d.json["text"] for d in by_path["/slack"])
    assert all(model_name in text for text in texts)
    assert all(set(d.json) <= {"text", "blocks"} for d in by_path["/slack"])

    # A user template, as plain text.
    lines = sorted(d.body.decode() for d in by_path["/template"])
    assert lines == [
        f"MODEL_VERSION_ALIAS_CREATED {model_name}/2",
        f"MODEL_VERSION_TRANSITIONED_STAGE {model_name}/1",
    ]
    assert all(d.header("Content-Type") == "text/plain" for d in by_path["/template"])

    # Every delivery was logged (--verbose), and no secret with it.
    assert len([line for line in result.stderr.splitlines() if "delivery.succeeded" in line]) == 18
    for secret in SECRETS.values():
        assert secret not in result.stdout + result.stderr
