"""MLflow 3's prompt registry on a real server: every prompt event arrives, each once, to a
webhook that subscribes to them, and never to one that does not ("*" is the model registry).

Each step makes one change through MlflowClient's prompt methods, runs `mlflow-watcher run
--once`, and compares what the receiver got in that run with exactly the events expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ConfigFor, config_in
from tests.e2e.harness import MlflowServer, Receiver, Steps, summary, wait_for

EXPERIMENT_IDS_TAG = "_mlflow_experiment_ids"


def registered(client: Any, name: str, template: str, **kwargs: Any) -> None:
    """register_prompt as a user calls it, and the prompt tag MLflow's client then sets on a
    thread of its own (the experiment the prompt was registered in): waited for, so that it
    belongs to this step."""
    client.register_prompt(name, template, **kwargs)
    wait_for(
        lambda: EXPERIMENT_IDS_TAG in client.get_prompt(name).tags,
        30,
        f"MLflow's client to tag {name} with its experiment",
    )


def test_every_prompt_event_arrives_once(
    client: Any, config_for: ConfigFor, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    old, name = f"{model_name}-old", f"{model_name}-greeting"
    registered(client, old, "Hello {{name}}")  # before the baseline: adopted, never announced
    steps = Steps(config_for(f"{model_name}*", events=["PROMPT_*"]), receiver)
    assert steps.run() == [], "the first run is a silent baseline"

    registered(client, name, "Hi {{name}}!", commit_message="first", tags={"team": "cx"})
    events = steps.run()
    linked = next(e["tag_value"] for e in events if e.get("tag_key") == EXPERIMENT_IDS_TAG)
    assert summary(events, "tag_key", "tag_value") == [
        ("PROMPT_CREATED", name, None, None, None),
        # MLflow's client tagged the prompt right after creating it; the tag it came with too.
        ("PROMPT_TAG_SET", name, None, EXPERIMENT_IDS_TAG, linked),
        ("PROMPT_TAG_SET", name, None, "team", "cx"),
        ("PROMPT_VERSION_CREATED", name, "1", None, None),
        ("PROMPT_VERSION_TAG_SET", name, "1", "team", "cx"),
    ]
    created = next(e for e in events if e["event"] == "PROMPT_VERSION_CREATED")
    # The template, and only the user's tags: not the ones MLflow keeps for itself.
    assert (created["template"], created["description"], created["tags"]) == (
        "Hi {{name}}!",
        "first",
        {"team": "cx"},
    )
    prompt = next(e for e in events if e["event"] == "PROMPT_CREATED")
    # A poll sees the prompt with the tag set right after it was created.
    assert prompt["tags"] == {"team": "cx", EXPERIMENT_IDS_TAG: linked}
    assert prompt["description"] == "first"

    client.set_prompt_tag(name, "lang", "en")
    assert summary(steps.run(), "tag_key", "tag_value") == [
        ("PROMPT_TAG_SET", name, None, "lang", "en")
    ]
    client.delete_prompt_tag(name, "lang")
    assert summary(steps.run(), "tag_key", "previous_value") == [
        ("PROMPT_TAG_DELETED", name, None, "lang", "en")
    ]
    client.set_prompt_version_tag(name, "1", "review", "approved")
    assert summary(steps.run(), "tag_key", "tag_value") == [
        ("PROMPT_VERSION_TAG_SET", name, "1", "review", "approved")
    ]
    client.delete_prompt_version_tag(name, "1", "review")
    assert summary(steps.run(), "tag_key") == [("PROMPT_VERSION_TAG_DELETED", name, "1", "review")]

    client.set_prompt_alias(name, "production", 1)
    assert summary(steps.run(), "alias", "previous_version") == [
        ("PROMPT_ALIAS_CREATED", name, "1", "production", None)
    ]
    registered(client, name, "Hi {{name}}, welcome back!")
    [second] = steps.run()
    assert (second["event"], second["model_version"], second["template"]) == (
        "PROMPT_VERSION_CREATED",
        "2",
        "Hi {{name}}, welcome back!",
    )
    client.set_prompt_alias(name, "production", 2)
    assert summary(steps.run(), "alias", "previous_version") == [
        ("PROMPT_ALIAS_CREATED", name, "2", "production", "1")
    ]
    client.delete_prompt_alias(name, "production")
    assert summary(steps.run(), "alias") == [("PROMPT_ALIAS_DELETED", name, "2", "production")]

    client.delete_prompt_version(name, "1")
    assert summary(steps.run()) == [("PROMPT_VERSION_DELETED", name, "1")]
    client.delete_prompt(name)
    assert summary(steps.run()) == [("PROMPT_DELETED", name, None)]
    assert steps.run() == [], "nothing twice"


def test_a_star_subscription_gets_no_prompt_event(
    client: Any, config_for: ConfigFor, receiver: Receiver, model_name: str
) -> None:
    steps = Steps(config_for(f"{model_name}*", events=["*"]), receiver)
    assert steps.run() == []
    name = f"{model_name}-greeting"
    client.create_prompt(name, tags={"team": "cx"})
    client.create_prompt_version(name, "Hi {{name}}!")
    client.set_prompt_alias(name, "production", 1)
    client.create_registered_model(model_name)
    assert summary(steps.run()) == [("REGISTERED_MODEL_CREATED", model_name, None)]


@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_prompts_read_straight_from_a_store(
    store: str,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through MlflowClient (the file store, a database), which leaves prompts out of its
    searches and refuses to get one by name unless asked the right way."""
    from mlflow import MlflowClient

    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    else:
        uri = mlflow_server.db_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = f"{model_name}-greeting"
    client.create_prompt(name, tags={"team": "cx"})
    client.create_prompt_version(name, "Hi {{name}}!")
    config = config_in(
        tmp_path, mlflow_server, receiver, f"{model_name}*", events=["PROMPT_*"], tracking_uri=uri
    )
    steps = Steps(config, receiver)
    assert steps.run() == []
    client.create_prompt_version(name, "Hello {{name}}!", tags={"author": "alice"})
    client.set_prompt_alias(name, "production", 2)
    client.set_prompt_tag(name, "lang", "en")
    assert summary(steps.run(), "alias", "tag_key") == [
        ("PROMPT_ALIAS_CREATED", name, "2", "production", None),
        ("PROMPT_TAG_SET", name, None, None, "lang"),
        ("PROMPT_VERSION_CREATED", name, "2", None, None),
        ("PROMPT_VERSION_TAG_SET", name, "2", None, "author"),
    ]
    client.delete_prompt_version(name, "1")
    assert summary(steps.run()) == [("PROMPT_VERSION_DELETED", name, "1")]
    assert steps.run() == []


def test_subscribing_on_an_existing_state_adopts_the_prompts(
    client: Any, config_for: ConfigFor, receiver: Receiver, model_name: str
) -> None:
    name = f"{model_name}-greeting"
    models_only = Steps(config_for(f"{model_name}*", events=["*"]), receiver)
    assert models_only.run() == []  # the baseline, without prompts
    client.create_prompt(name)  # after the baseline, while nobody watched prompts
    client.create_prompt_version(name, "Hi {{name}}!")
    assert models_only.run() == []
    # The same state, now with a prompt subscription: the prompt is adopted, not created.
    steps = Steps(config_for(f"{model_name}*", events=["*", "PROMPT_*"]), receiver)
    steps.seen = models_only.seen
    assert steps.run() == []
    client.set_prompt_alias(name, "production", 1)
    assert summary(steps.run(), "alias") == [("PROMPT_ALIAS_CREATED", name, "1", "production")]
