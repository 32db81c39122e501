"""Prompt events in the config (names, "*" and "PROMPT_*") and in every format; the `mlflow`
format's data as MLflow 3's handlers build it (mlflow/server/handlers.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import load_text
from watcher.errors import ConfigError
from watcher.model import ALL_EVENTS, PROMPT_EVENTS, EventType
from watcher.payloads import FormatOptions, describe, example_event, render, watcher_payload

HOOK = '[[webhooks]]\nname = "deploy"\nurl = "http://receiver.example/hook"\n'
P = EventType


def events_of(tmp_path: Path, events: str) -> frozenset[EventType]:
    (hook,) = load_text(tmp_path, f"{HOOK}events = {events}\n").webhooks
    return hook.events


def mlflow(event_type: EventType, **changes: Any) -> dict[str, Any]:
    event = replace(example_event(event_type, "greeting"), **changes)
    body = json.loads(render(event, "deploy", FormatOptions(format="mlflow")).body)
    assert isinstance(body, dict)
    return body


# --------------------------------------------------------------------------- config


def test_star_is_the_model_registry_and_prompts_are_opt_in(tmp_path: Path) -> None:
    assert not events_of(tmp_path, '["*"]') & PROMPT_EVENTS
    assert events_of(tmp_path, '["PROMPT_*"]') == PROMPT_EVENTS
    assert events_of(tmp_path, '["*", "prompt_*"]') == ALL_EVENTS | PROMPT_EVENTS
    assert not load_text(tmp_path, f'{HOOK}events = ["*"]\n').watches_prompts
    assert load_text(tmp_path, f'{HOOK}events = ["PROMPT_ALIAS_CREATED"]\n').watches_prompts


def test_default_and_star_subscriptions_want_no_prompt_event(tmp_path: Path) -> None:
    for text in (HOOK, f'{HOOK}events = ["*"]\n'):
        (hook,) = load_text(tmp_path, text).webhooks
        assert not any(hook.wants(example_event(kind, "greeting")) for kind in PROMPT_EVENTS)


def test_mlflow_native_prompt_names_are_accepted(tmp_path: Path) -> None:
    native = (
        '["prompt.created", "prompt_version.created", "prompt_tag.set", "prompt_tag.deleted",'
        ' "prompt_version_tag.set", "prompt_version_tag.deleted", "prompt_alias.created",'
        ' "prompt_alias.deleted"]'
    )
    assert events_of(tmp_path, native) == PROMPT_EVENTS - {
        P.PROMPT_DELETED,
        P.PROMPT_VERSION_DELETED,
    }
    assert events_of(tmp_path, '["prompt_deleted", "PROMPT_VERSION_DELETED"]') == {
        P.PROMPT_DELETED,
        P.PROMPT_VERSION_DELETED,
    }


def test_an_unknown_prompt_name_is_refused_naming_the_wildcard(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PROMPT_\*"):
        load_text(tmp_path, f'{HOOK}events = ["prompt.deleted"]\n')


def test_alias_globs_apply_to_prompt_aliases(tmp_path: Path) -> None:
    (hook,) = load_text(tmp_path, f'{HOOK}events = ["PROMPT_*"]\naliases = ["champion"]\n').webhooks
    assert not hook.wants(example_event(P.PROMPT_ALIAS_CREATED, "greeting"))  # "production"
    assert hook.wants(example_event(P.PROMPT_VERSION_CREATED, "greeting"))


# --------------------------------------------------------------------------- mlflow format


def test_mlflow_prompt_version_created_is_mlflows() -> None:
    body = mlflow(P.PROMPT_VERSION_CREATED)
    assert (body["entity"], body["action"]) == ("prompt_version", "created")
    assert list(body["data"]) == ["name", "version", "template", "tags", "description"]
    assert body["data"]["template"] == example_event(P.PROMPT_VERSION_CREATED).template
    # MLflow's handler: `description or None`; tags are {} when there are none.
    sparse = mlflow(P.PROMPT_VERSION_CREATED, description="", tags=None)["data"]
    assert (sparse["description"], sparse["tags"]) == (None, {})


def test_mlflow_prompt_created_keeps_an_empty_description() -> None:
    # MLflow sends the request's description: "" when none was given, as for models.
    data = mlflow(P.PROMPT_CREATED, description="", tags={})["data"]
    assert data == {"name": "greeting", "tags": {}, "description": ""}


@pytest.mark.parametrize(
    ("event_type", "entity", "action", "data"),
    [
        (
            P.PROMPT_TAG_SET,
            "prompt_tag",
            "set",
            {"name": "greeting", "key": "language", "value": "en"},
        ),
        (P.PROMPT_TAG_DELETED, "prompt_tag", "deleted", {"name": "greeting", "key": "language"}),
        (
            P.PROMPT_VERSION_TAG_SET,
            "prompt_version_tag",
            "set",
            {"name": "greeting", "version": "3", "key": "review", "value": "approved"},
        ),
        (
            P.PROMPT_VERSION_TAG_DELETED,
            "prompt_version_tag",
            "deleted",
            {"name": "greeting", "version": "3", "key": "review"},
        ),
        (
            P.PROMPT_ALIAS_CREATED,
            "prompt_alias",
            "created",
            {"name": "greeting", "alias": "production", "version": "3"},
        ),
        (
            P.PROMPT_ALIAS_DELETED,
            "prompt_alias",
            "deleted",
            {"name": "greeting", "alias": "production"},
        ),
        (
            P.PROMPT_VERSION_DELETED,
            "prompt_version",
            "deleted",
            {"name": "greeting", "version": "3"},
        ),
        (P.PROMPT_DELETED, "prompt", "deleted", {"name": "greeting"}),
    ],
)
def test_mlflow_prompt_payloads(
    event_type: EventType, entity: str, action: str, data: dict[str, Any]
) -> None:
    body = mlflow(event_type)
    assert (body["entity"], body["action"]) == (entity, action)
    assert list(body["data"].items()) == list(data.items())  # MLflow's keys, in its order


# --------------------------------------------------------------------------- the others


def test_the_watcher_format_carries_the_template_and_the_moved_alias() -> None:
    created = watcher_payload(example_event(P.PROMPT_VERSION_CREATED, "greeting"), "deploy")
    assert created["event"] == "PROMPT_VERSION_CREATED"
    assert (created["model_name"], created["model_version"]) == ("greeting", "3")
    assert created["template"].startswith("Hello {{name}}!")
    assert "source" not in created
    assert "run_id" not in created
    moved = watcher_payload(example_event(P.PROMPT_ALIAS_CREATED, "greeting"), "deploy")
    assert (moved["alias"], moved["model_version"], moved["previous_version"]) == (
        "production",
        "3",
        "2",
    )


@pytest.mark.parametrize(
    ("event_type", "text"),
    [
        (P.PROMPT_CREATED, "prompt greeting: created"),
        (P.PROMPT_DELETED, "prompt greeting: deleted"),
        (P.PROMPT_VERSION_CREATED, "prompt greeting v3: new version"),
        (P.PROMPT_VERSION_DELETED, "prompt greeting v3: version deleted"),
        (P.PROMPT_TAG_SET, "prompt greeting: tag 'language' changed from 'fr' to 'en'"),
        (P.PROMPT_TAG_DELETED, "prompt greeting: tag 'language' deleted (was 'en')"),
        (
            P.PROMPT_VERSION_TAG_SET,
            "prompt greeting v3: tag 'review' changed from 'pending' to 'approved'",
        ),
        (P.PROMPT_VERSION_TAG_DELETED, "prompt greeting v3: tag 'review' deleted (was 'approved')"),
        (P.PROMPT_ALIAS_CREATED, "prompt greeting@production moved from v2 to v3"),
        (P.PROMPT_ALIAS_DELETED, "prompt greeting@production removed (was v3)"),
    ],
)
def test_descriptions_say_it_is_a_prompt(event_type: EventType, text: str) -> None:
    assert describe(example_event(event_type, "greeting")) == text


def test_databricks_prompt_tags_as_databricks_sends_tags() -> None:
    event = example_event(P.PROMPT_VERSION_TAG_DELETED, "greeting")
    body = json.loads(render(event, "deploy", FormatOptions(format="databricks")).body)
    assert body["tags"] == [{"key": "review", "value": None}]
    assert (body["model_name"], body["version"]) == ("greeting", "3")
