"""Hints end to end: `hints register` puts MLflow's native webhook on a real MLflow server,
a change in MLflow makes that server POST a signed hint to the daemon's health server, and
the daemon accepts it, counts it, and `status` shows it; a forged hint is refused and counted,
and a genuine hint naming a model that did not change produces no event.

The MLflow server of this test is its own: by default MLflow refuses http:// webhook URLs
and private addresses, so it runs with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and
MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true (what the documentation tells operators to set for a
watcher on a private network without TLS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import config_in
from tests.e2e.harness import Daemon, MlflowServer, Receiver, run_watcher, wait_for, watcher_env
from tests.helpers import free_port
from watcher import signing

HINT_SECRET = "e2e-hint-secret-9b2e"
HOOK_NAME = "mlflow-watcher-hints"


@pytest.fixture
def hinting_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """An MLflow server that may send webhooks to http://127.0.0.1 (and sees a new webhook
    at once: its list of webhooks is cached for a second, not a minute)."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    yield server
    server.stop()


def hints_total(base: str) -> dict[str, float]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlflow_watcher_hints_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def status_of(config: Path, env: dict[str, str]) -> dict[str, Any]:
    done = run_watcher("status", "--json", "-c", str(config), env=env)
    assert done.returncode == 0, done.stderr
    hints: dict[str, Any] = json.loads(done.stdout)["hints"]
    return hints


def hinted_config(
    tmp_path: Path,
    server: MlflowServer,
    receiver: Receiver,
    model: str,
    interval: str = "30s",
    **options: Any,
) -> tuple[str, Path]:
    """A config with hints on (the secret in E2E_HINTS) on a free port, polling every 30 s
    by default (the polls here come from hints, not from the interval): the base URL and the
    file."""
    port = free_port()
    config = config_in(
        tmp_path,
        server,
        receiver,
        model,
        interval=interval,
        extra=f'[server]\nlisten = "127.0.0.1:{port}"\n[hints]\nsecret_env = "E2E_HINTS"\n',
        **options,
    )
    return f"http://127.0.0.1:{port}", config


def registered_without_hot_set(
    tmp_path: Path,
    server: MlflowServer,
    receiver: Receiver,
    models: str,
    events: list[str],
    interval: str = "30s",
    models_scan: str = "1h",
) -> tuple[Path, dict[str, str]]:
    """hinted_config with no hot set, the versions scanned hourly and the models every
    ``models_scan``, and MLflow's native webhook registered by `hints register`: the config
    file and the daemon's environment."""
    base, config = hinted_config(
        tmp_path,
        server,
        receiver,
        models,
        interval=interval,
        events=events,
        watch_extra=(
            f'models_scan_interval = "{models_scan}"\nversions_scan_interval = "1h"\n'
            'hot_window = "off"\n'
        ),
    )
    env = watcher_env({"E2E_HINTS": HINT_SECRET})
    registered = run_watcher(
        "hints", "register", "-c", str(config), "--url", f"{base}/mlflow-hints", env=env
    )
    assert registered.returncode == 0, registered.stderr
    return config, env


def test_mlflow_sends_hints_the_daemon_accepts_and_a_forged_one_is_refused(
    tmp_path: Path, hinting_server: MlflowServer, receiver: Receiver, model_name: str
) -> None:
    base, config = hinted_config(tmp_path, hinting_server, receiver, model_name)
    env = watcher_env({"E2E_HINTS": HINT_SECRET})
    register = ("hints", "register", "-c", str(config), "--url", f"{base}/mlflow-hints")

    printed = run_watcher(*register, "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    assert 'secret=os.environ["E2E_HINTS"]' in printed.stdout
    assert HINT_SECRET not in printed.stdout + printed.stderr

    first = run_watcher(*register, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"registered MLflow webhook {HOOK_NAME!r}")
    again = run_watcher(*register, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"updated MLflow webhook {HOOK_NAME!r}")
    client = hinting_server.client()
    hooks = [w for w in client.list_webhooks() if w.name == HOOK_NAME]
    assert len(hooks) == 1
    assert hooks[0].url == f"{base}/mlflow-hints"
    assert "model_version_alias.created" in {str(e) for e in hooks[0].events}

    with Daemon(config, env) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)
        assert status_of(config, env)["on"]

        client.create_registered_model(model_name)
        client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
        client.set_registered_model_alias(model_name, "champion", "1")
        wait_for(
            lambda: (
                {"registered_model.created", "model_version.created"}
                | {"model_version_alias.created"}
                <= {line["hint_event"] for line in daemon.logged("hint.accepted")}
            ),
            30,
            "MLflow's hints accepted",
        )
        assert {line["model"] for line in daemon.logged("hint.accepted")} == {model_name}
        # Each hint woke a poll long before the 30 s interval.
        wait_for(lambda: daemon.polls() >= 2, 20, "a poll woken by a hint")

        body = json.dumps(
            {"entity": "model_version_alias", "action": "created", "data": {"name": "x"}}
        ).encode()
        forged = signing.sign("mlflow", "not-the-secret", "forged-1", body)
        answer = requests.post(f"{base}/mlflow-hints", data=body, headers=forged, timeout=5)
        assert answer.status_code == 401
        daemon.wait_logged("hint.refused")
        (refused,) = daemon.logged("hint.refused")
        assert (refused["result"], refused["reason"]) == ("forged", "signature mismatch")

        # A genuine hint naming a model that did not change: read, and no event.
        before = len(daemon.logged("poll.finished"))
        ghost = json.dumps(
            {"entity": "model_version_alias", "action": "created", "data": {"name": model_name}}
        ).encode()
        genuine = signing.sign("mlflow", HINT_SECRET, "unchanged-1", ghost)
        answer = requests.post(f"{base}/mlflow-hints", data=ghost, headers=genuine, timeout=5)
        assert answer.status_code == 204
        wait_for(lambda: len(daemon.logged("poll.finished")) > before, 20, "the hinted poll")
        assert all(line["events"] == 0 for line in daemon.logged("poll.finished")[before:])
        # ... and sent again, a replay: 200, so that MLflow would not retry it.
        replayed = requests.post(f"{base}/mlflow-hints", data=ghost, headers=genuine, timeout=5)
        assert replayed.status_code == 200

        counts = hints_total(base)
        assert counts["accepted"] >= 4
        assert counts["forged"] == 1
        assert counts["replayed"] == 1

        # The counts reach the state with the next poll (the alias change woke one).
        client.set_registered_model_alias(model_name, "challenger", "1")

        def recorded() -> bool:
            counts = status_of(config, env)["counts"]
            return bool(counts["forged"] == 1 and counts["replayed"] == 1)

        # A poll may have recorded the counts between the forged hint and the replay.
        wait_for(recorded, 30, "status showing the forged and the replayed hint")
        hints = status_of(config, env)
        assert hints["counts"]["accepted"] >= 4
        assert hints["counts"]["replayed"] == 1
        assert hints["path"] == "/mlflow-hints"
        assert hints["last_accepted_at"] is not None
        assert isinstance(hints["age_s"], int)
        text = run_watcher("status", "-c", str(config), env=env).stdout
        assert "hints:          on at /mlflow-hints; last accepted" in text
        assert daemon.terminate() == 0


def test_a_hint_brings_an_alias_and_a_tag_of_a_quiet_model_without_a_scan(
    tmp_path: Path, hinting_server: MlflowServer, receiver: Receiver, model_name: str
) -> None:
    """A model made before the daemon started, with no hot set and scans an hour apart: only
    the hints MLflow sends can bring its alias and tag this soon, read with the next poll."""
    client = hinting_server.client()
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    config, env = registered_without_hot_set(
        tmp_path,
        hinting_server,
        receiver,
        model_name,
        events=["MODEL_VERSION_ALIAS_CREATED", "MODEL_VERSION_TAG_SET"],
    )
    with Daemon(config, env) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)
        client.set_registered_model_alias(model_name, "champion", "1")
        client.set_model_version_tag(model_name, "1", "validation_status", "approved")
        receiver.wait_for_count(2, timeout=60)
        assert sorted(d.json["event"] for d in receiver.deliveries()) == [
            "MODEL_VERSION_ALIAS_CREATED",
            "MODEL_VERSION_TAG_SET",
        ]
        reads = [str(line.get("read")) for line in daemon.logged("poll.finished")]
        assert any("hinted" in read for read in reads)
        assert not any("models" in read or "versions" in read for read in reads[1:]), reads


def test_a_lost_hint_loses_nothing_the_poll_finds_the_change(
    tmp_path: Path, hinting_server: MlflowServer, receiver: Receiver, model_name: str
) -> None:
    """Hints turned off mid-run, two ways: MLflow's webhook signs with a secret the watcher
    does not have (each hint refused as forged), then the webhook is deleted (MLflow sends
    none). An alias set on a quiet model after each still arrives, once: the models scan
    finds it (a short cadence here, so that the test need not wait minutes)."""
    client = hinting_server.client()
    before, refused, deleted = (f"{model_name}-{part}" for part in ("on", "refused", "deleted"))
    for name in (before, refused, deleted):
        client.create_registered_model(name)
        client.create_model_version(name, f"s3://bucket/{name}/1")
    config, env = registered_without_hot_set(
        tmp_path,
        hinting_server,
        receiver,
        f"{model_name}-*",
        events=["MODEL_VERSION_ALIAS_CREATED"],
        interval="1s",
        models_scan="3s",
    )
    (hook,) = [w for w in client.list_webhooks() if w.name == HOOK_NAME]

    def alias_events(name: str) -> list[Any]:
        return [d for d in receiver.deliveries() if d.json.get("model_name") == name]

    def hinted_models(daemon: Daemon) -> set[str]:
        return {str(line["model"]) for line in daemon.logged("hint.accepted")}

    with Daemon(config, env) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)
        # Hints on: MLflow's hint names the model, and its alias arrives.
        client.set_registered_model_alias(before, "champion", "1")
        wait_for(lambda: before in hinted_models(daemon), 30, "the hint of the first alias")
        wait_for(lambda: alias_events(before), 60, "the first alias's event")

        # Off, one way: MLflow still sends, but signs with a secret the watcher refuses.
        client.update_webhook(hook.webhook_id, secret="rotated-on-mlflow-only")
        client.set_registered_model_alias(refused, "champion", "1")
        daemon.wait_logged("hint.refused", timeout=30)
        assert daemon.logged("hint.refused")[0]["result"] == "forged"
        wait_for(lambda: alias_events(refused), 120, "the alias whose hint was refused")

        # Off, the other way: MLflow sends nothing.
        client.delete_webhook(hook.webhook_id)
        client.set_registered_model_alias(deleted, "champion", "1")
        wait_for(lambda: alias_events(deleted), 120, "the alias after the webhook was deleted")

        assert not {refused, deleted} & hinted_models(daemon)
        for name in (before, refused, deleted):
            (event,) = alias_events(name)
            assert event.json["event"] == "MODEL_VERSION_ALIAS_CREATED"
            assert (event.json["alias"], event.json["model_version"]) == ("champion", "1")
        assert daemon.terminate() == 0
