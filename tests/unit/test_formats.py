"""Every format renders every event, within the limits and with the fields its receiver expects."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from mlflow.webhooks import types as mlflow_types

from watcher.model import NATIVE_EVENT_NAMES, STAGE_EVENTS, EventType
from watcher.payloads import (
    FORMATS,
    FormatOptions,
    compile_template,
    describe,
    example_event,
    render,
)

ALL_TYPES = list(EventType)
TOKEN = "glptt-very-secret-trigger-token"
TEMPLATE = compile_template(
    '{"what": {{ event.event | tojson }}, "model": {{ model_name | tojson }}}'
)


def options(fmt: str, **overrides: Any) -> FormatOptions:
    fields: dict[str, Any] = {"format": fmt}
    if fmt in ("gitlab", "jenkins"):
        fields["token"] = TOKEN
    if fmt == "template":
        fields["template"] = TEMPLATE
    fields.update(overrides)
    return FormatOptions(**fields)


def as_json(fmt: str, kind: EventType, /, **overrides: Any) -> dict[str, Any]:
    rendered = render(example_event(kind), "deploy", options(fmt, **overrides))
    assert rendered.content_type == "application/json"
    body = json.loads(rendered.body)
    assert isinstance(body, dict)
    return body


def as_form(fmt: str, kind: EventType, /, **overrides: Any) -> dict[str, str]:
    rendered = render(example_event(kind), "deploy", options(fmt, **overrides))
    assert rendered.content_type == "application/x-www-form-urlencoded"
    parsed = parse_qs(rendered.body.decode("ascii"), strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {key: values[0] for key, values in parsed.items()}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_every_format_renders_every_event(fmt: str, event_type: EventType) -> None:
    event = example_event(event_type)
    rendered = render(event, "deploy", options(fmt))
    assert rendered.body
    assert rendered == render(event, "deploy", options(fmt)), "rendering is deterministic"
    if rendered.content_type == "application/json":
        json.loads(rendered.body)
    else:
        parse_qs(rendered.body.decode("ascii"), strict_parsing=True)


def test_example_events_are_of_their_type_and_named() -> None:
    for event_type in ALL_TYPES:
        event = example_event(event_type, model_name="churn")
        assert event.type is event_type
        assert event.model_name == "churn"
    ids = {example_event(t).event_id for t in ALL_TYPES}
    assert len(ids) == len(ALL_TYPES)


# --------------------------------------------------------------------------- watcher


def test_watcher_format_adds_event_specific_fields_only_when_set() -> None:
    alias = as_json("watcher", EventType.MODEL_VERSION_ALIAS_CREATED)
    assert alias["alias"] == "champion"
    assert alias["previous_version"] == "2"
    assert not {"from_stage", "tag_key"} & set(alias)
    tag = as_json("watcher", EventType.MODEL_VERSION_TAG_DELETED)
    assert tag["tag_key"] == "validation_status"
    assert tag["previous_value"] == "passed"
    assert "tag_value" not in tag
    created = as_json("watcher", EventType.MODEL_VERSION_CREATED)
    assert created["tags"] == {"validation_status": "pending"}
    assert "description" in created
    stage = as_json("watcher", EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING)
    assert (stage["from_stage"], stage["to_stage"]) == ("None", "Staging")
    assert not {"alias", "tag_key", "tags", "description"} & set(stage)


# --------------------------------------------------------------------------- databricks

DATABRICKS_FIELDS = {
    "event",
    "webhook_id",
    "event_timestamp",
    "model_name",
    "version",
    "to_stage",
    "from_stage",
    "text",
}


def test_databricks_stage_transition_has_their_fields() -> None:
    event = example_event(EventType.MODEL_VERSION_TRANSITIONED_STAGE)
    body = as_json("databricks", EventType.MODEL_VERSION_TRANSITIONED_STAGE)
    assert body == {
        "event": "MODEL_VERSION_TRANSITIONED_STAGE",
        "webhook_id": "deploy",
        "event_timestamp": event.timestamp,
        "model_name": "fraud-model",
        "version": "3",
        "to_stage": "Production",
        "from_stage": "Staging",
        "text": "fraud-model v3: Staging → Production",
    }


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_databricks_uses_only_their_names_plus_tags_and_alias(event_type: EventType) -> None:
    body = as_json("databricks", event_type)
    renamed = {"previous_name"} if event_type is EventType.REGISTERED_MODEL_RENAMED else set()
    assert set(body) <= DATABRICKS_FIELDS | {"tags", "alias", "previous_version"} | renamed
    assert body["event"] == event_type.value
    assert isinstance(body["text"], str)
    assert body["text"]
    assert ("to_stage" in body) == (event_type in STAGE_EVENTS)
    # A prompt and its tags are model-level too (a prompt is a registered model).
    model_level = event_type.name.startswith(
        ("REGISTERED_MODEL", "PROMPT_CREATED", "PROMPT_DELETED", "PROMPT_TAG")
    )
    assert ("version" in body) != model_level
    assert None not in [body[k] for k in DATABRICKS_FIELDS if k in body]


def test_databricks_tag_events_carry_a_tag_list() -> None:
    assert as_json("databricks", EventType.MODEL_VERSION_TAG_SET)["tags"] == [
        {"key": "validation_status", "value": "passed"}
    ]
    assert as_json("databricks", EventType.MODEL_VERSION_TAG_DELETED)["tags"] == [
        {"key": "validation_status", "value": None}
    ]


def test_databricks_alias_events() -> None:
    moved = as_json("databricks", EventType.MODEL_VERSION_ALIAS_CREATED)
    assert (moved["alias"], moved["version"], moved["previous_version"]) == ("champion", "3", "2")
    deleted = as_json("databricks", EventType.MODEL_VERSION_ALIAS_DELETED)
    assert (deleted["alias"], deleted["version"]) == ("champion", "3")
    assert "previous_version" not in deleted


# --------------------------------------------------------------------------- mlflow

MLFLOW_PAYLOADS: dict[EventType, type] = {
    EventType.REGISTERED_MODEL_CREATED: mlflow_types.RegisteredModelCreatedPayload,
    EventType.MODEL_VERSION_CREATED: mlflow_types.ModelVersionCreatedPayload,
    EventType.MODEL_VERSION_TAG_SET: mlflow_types.ModelVersionTagSetPayload,
    EventType.MODEL_VERSION_TAG_DELETED: mlflow_types.ModelVersionTagDeletedPayload,
    EventType.MODEL_VERSION_ALIAS_CREATED: mlflow_types.ModelVersionAliasCreatedPayload,
    EventType.MODEL_VERSION_ALIAS_DELETED: mlflow_types.ModelVersionAliasDeletedPayload,
    EventType.PROMPT_CREATED: mlflow_types.PromptCreatedPayload,
    EventType.PROMPT_VERSION_CREATED: mlflow_types.PromptVersionCreatedPayload,
    EventType.PROMPT_TAG_SET: mlflow_types.PromptTagSetPayload,
    EventType.PROMPT_TAG_DELETED: mlflow_types.PromptTagDeletedPayload,
    EventType.PROMPT_VERSION_TAG_SET: mlflow_types.PromptVersionTagSetPayload,
    EventType.PROMPT_VERSION_TAG_DELETED: mlflow_types.PromptVersionTagDeletedPayload,
    EventType.PROMPT_ALIAS_CREATED: mlflow_types.PromptAliasCreatedPayload,
    EventType.PROMPT_ALIAS_DELETED: mlflow_types.PromptAliasDeletedPayload,
}


def test_the_native_event_table_covers_mlflows_names() -> None:
    assert set(MLFLOW_PAYLOADS) == set(NATIVE_EVENT_NAMES.values())


@pytest.mark.parametrize(
    ("native", "event_type"), sorted(NATIVE_EVENT_NAMES.items()), ids=sorted(NATIVE_EVENT_NAMES)
)
def test_mlflow_native_events_match_mlflows_payload_types(
    native: str, event_type: EventType
) -> None:
    body = as_json("mlflow", event_type)
    assert set(body) == {"entity", "action", "timestamp", "data"}
    assert f"{body['entity']}.{body['action']}" == native
    payload_type = MLFLOW_PAYLOADS[event_type]
    assert set(body["data"]) == set(payload_type.__annotations__)
    # The same (entity, action) -> payload class mapping MLflow uses to build its examples.
    pairs = {(e.value, a.value): c for (e, a), c in mlflow_types.EVENT_TO_PAYLOAD_CLASS.items()}
    assert pairs[(body["entity"], body["action"])] is payload_type


def test_mlflow_data_values() -> None:
    created = as_json("mlflow", EventType.MODEL_VERSION_CREATED)["data"]
    assert created["name"] == "fraud-model"
    assert created["version"] == "3"
    assert created["tags"] == {"validation_status": "pending"}
    assert created["run_id"] == example_event(EventType.MODEL_VERSION_CREATED).run_id
    tag = as_json("mlflow", EventType.MODEL_VERSION_TAG_SET)["data"]
    assert tag == {
        "name": "fraud-model",
        "version": "3",
        "key": "validation_status",
        "value": "passed",
    }


def test_mlflow_version_created_without_run_id_sends_null_and_empty_tags() -> None:
    event = replace(
        example_event(EventType.MODEL_VERSION_CREATED), run_id="", tags=None, description=None
    )
    data = json.loads(render(event, "d", FormatOptions(format="mlflow")).body)["data"]
    assert data["run_id"] is None
    assert data["tags"] == {}
    assert data["description"] is None


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_mlflow_timestamp_is_iso_8601_utc_of_the_event(event_type: EventType) -> None:
    body = as_json("mlflow", event_type)
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    expected = datetime.fromtimestamp(example_event(event_type).timestamp / 1000, tz=UTC)
    assert stamp == expected


@pytest.mark.parametrize(
    ("event_type", "entity", "action", "data_keys"),
    [
        (t, "model_version", "stage_transitioned", {"name", "version", "from_stage", "to_stage"})
        for t in sorted(STAGE_EVENTS)
    ]
    + [
        (EventType.MODEL_VERSION_DELETED, "model_version", "deleted", {"name", "version"}),
        (EventType.REGISTERED_MODEL_DELETED, "registered_model", "deleted", {"name"}),
        (
            EventType.REGISTERED_MODEL_RENAMED,
            "registered_model",
            "renamed",
            {"name", "previous_name"},
        ),
    ],
)
def test_mlflow_envelope_for_events_mlflow_does_not_send(
    event_type: EventType, entity: str, action: str, data_keys: set[str]
) -> None:
    body = as_json("mlflow", event_type)
    assert (body["entity"], body["action"]) == (entity, action)
    assert set(body["data"]) == data_keys


# --------------------------------------------------------------------------- github


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_github_dispatch_limits(event_type: EventType) -> None:
    rendered = render(example_event(event_type), "deploy", options("github"))
    body = json.loads(rendered.body)
    assert set(body) == {"event_type", "client_payload"}
    assert body["event_type"] == event_type.value.lower()
    assert len(body["event_type"]) <= 100
    assert len(body["client_payload"]) <= 10
    assert len(rendered.body) < 64 * 1024
    client = body["client_payload"]
    assert client["model_name"] == "fraud-model"
    assert client["event"] == event_type.value


def test_github_keeps_the_main_fields_on_top_and_the_rest_in_details() -> None:
    client = as_json("github", EventType.MODEL_VERSION_TRANSITIONED_STAGE)["client_payload"]
    assert (client["from_stage"], client["to_stage"]) == ("Staging", "Production")
    assert client["details"]["webhook_id"] == "deploy"
    assert client["details"]["run_id"] == example_event(EventType.MODEL_VERSION_CREATED).run_id


def test_github_event_type_is_configurable_and_capped() -> None:
    assert as_json("github", EventType.MODEL_VERSION_CREATED, event_type="mlflow")[
        "event_type"
    ] == ("mlflow")
    long = as_json("github", EventType.MODEL_VERSION_CREATED, event_type="x" * 300)
    assert long["event_type"] == "x" * 100


@pytest.mark.parametrize(
    "event_type", [EventType.MODEL_VERSION_CREATED, EventType.REGISTERED_MODEL_CREATED]
)
def test_github_shortens_a_huge_description_and_tags(event_type: EventType) -> None:
    huge = replace(
        example_event(event_type),
        description="é" * 200_000,
        tags={f"key-{i}": "v" * 5_000 for i in range(200)},
    )
    rendered = render(huge, "deploy", FormatOptions(format="github"))
    assert len(rendered.body) < 64 * 1024
    client = json.loads(rendered.body)["client_payload"]
    assert len(client) <= 10
    assert client["details"]["truncated"] is True
    assert client["model_name"] == "fraud-model"
    assert client["event_id"] == huge.event_id


def test_github_with_many_tags_keeps_the_description_start() -> None:
    event = replace(
        example_event(EventType.MODEL_VERSION_CREATED),
        description="short and useful",
        tags={f"k{i}": "v" * 300 for i in range(400)},
    )
    client = json.loads(render(event, "d", FormatOptions(format="github")).body)["client_payload"]
    assert client["details"]["description"] == "short and useful"


def test_github_leaves_a_small_payload_untouched() -> None:
    client = as_json("github", EventType.MODEL_VERSION_CREATED)["client_payload"]
    assert "truncated" not in client["details"]
    assert (
        client["details"]["description"]
        == example_event(EventType.MODEL_VERSION_CREATED).description
    )


# --------------------------------------------------------------------------- gitlab, jenkins


@pytest.mark.parametrize(
    ("fmt", "event", "variable", "stages"),
    [
        ("gitlab", "MODEL_VERSION_TRANSITIONED_STAGE", "variables[{}]", ("Staging", "Production")),
        ("jenkins", "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", "{}", ("Production", "Archived")),
    ],
)
def test_a_trigger_form_carries_the_transition(
    fmt: str, event: str, variable: str, stages: tuple[str, str]
) -> None:
    """GitLab's pipeline trigger takes the values as variables[NAME], Jenkins's
    buildWithParameters as NAME."""
    kind = EventType[event]
    form = as_form(fmt, kind)
    expected = {
        "MODEL_NAME": "fraud-model",
        "MODEL_VERSION": "3",
        "EVENT": event,
        "FROM_STAGE": stages[0],
        "TO_STAGE": stages[1],
        "EVENT_ID": example_event(kind).event_id,
    }
    assert form["token"] == TOKEN
    assert {name: form[variable.format(name)] for name in expected} == expected
    assert variable.format("ALIAS") not in form


def test_gitlab_trigger_form() -> None:
    form = as_form("gitlab", EventType.MODEL_VERSION_TRANSITIONED_STAGE, ref="release")
    assert form["ref"] == "release"
    assert all(k in {"token", "ref"} or k.startswith("variables[") for k in form)


def test_gitlab_alias_and_default_ref() -> None:
    form = as_form("gitlab", EventType.MODEL_VERSION_ALIAS_CREATED)
    assert form["ref"] == "main"
    assert form["variables[ALIAS]"] == "champion"
    assert form["variables[PREVIOUS_VERSION]"] == "2"
    assert "variables[FROM_STAGE]" not in form
    assert "variables[TO_STAGE]" not in form


def test_gitlab_model_events_have_no_version() -> None:
    form = as_form("gitlab", EventType.REGISTERED_MODEL_DELETED)
    assert "variables[MODEL_VERSION]" not in form
    assert form["variables[EVENT]"] == "REGISTERED_MODEL_DELETED"


def test_jenkins_without_a_token_and_with_a_tag() -> None:
    form = as_form("jenkins", EventType.MODEL_VERSION_TAG_SET, token=None)
    assert "token" not in form
    assert (form["TAG_KEY"], form["TAG_VALUE"], form["PREVIOUS_VALUE"]) == (
        "validation_status",
        "passed",
        "pending",
    )


def test_form_values_survive_special_characters() -> None:
    event = replace(
        example_event(EventType.MODEL_VERSION_ALIAS_CREATED),
        model_name="a&b=c [d] é",
        alias="x+y",
    )
    rendered = render(event, "d", FormatOptions(format="jenkins"))
    form = parse_qs(rendered.body.decode("ascii"))
    assert form["MODEL_NAME"] == ["a&b=c [d] é"]
    assert form["ALIAS"] == ["x+y"]


# --------------------------------------------------------------------------- slack, describe


@pytest.mark.parametrize(
    ("event_type", "text"),
    [
        (EventType.MODEL_VERSION_TRANSITIONED_STAGE, "fraud-model v3: Staging → Production"),
        (EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING, "fraud-model v3: None → Staging"),
        (EventType.MODEL_VERSION_CREATED, "fraud-model v3: new version"),
        (EventType.MODEL_VERSION_DELETED, "fraud-model v3: version deleted"),
        (EventType.REGISTERED_MODEL_CREATED, "fraud-model: registered model created"),
        (EventType.REGISTERED_MODEL_DELETED, "fraud-model: registered model deleted"),
        (
            EventType.REGISTERED_MODEL_RENAMED,
            "fraud-model-v1 → fraud-model: registered model renamed",
        ),
        (
            EventType.MODEL_VERSION_TAG_SET,
            "fraud-model v3: tag 'validation_status' changed from 'pending' to 'passed'",
        ),
        (
            EventType.MODEL_VERSION_TAG_DELETED,
            "fraud-model v3: tag 'validation_status' deleted (was 'passed')",
        ),
        (EventType.MODEL_VERSION_ALIAS_CREATED, "fraud-model@champion moved from v2 to v3"),
        (EventType.MODEL_VERSION_ALIAS_DELETED, "fraud-model@champion removed (was v3)"),
    ],
)
def test_slack_text_is_a_readable_sentence(event_type: EventType, text: str) -> None:
    assert as_json("slack", event_type) == {"text": text}
    assert describe(example_event(event_type)) == text


def test_describe_new_tag_and_new_alias() -> None:
    tag = replace(example_event(EventType.MODEL_VERSION_TAG_SET), previous_value=None)
    assert describe(tag) == "fraud-model v3: tag 'validation_status' set to 'passed'"
    alias = replace(example_event(EventType.MODEL_VERSION_ALIAS_CREATED), previous_version=None)
    assert describe(alias) == "fraud-model@champion set to v3"


def test_slack_escapes_its_control_characters() -> None:
    event = replace(example_event(EventType.MODEL_VERSION_CREATED), model_name="a<b>&c")
    text = json.loads(render(event, "d", FormatOptions(format="slack")).body)["text"]
    assert text == "a&lt;b&gt;&amp;c v3: new version"


# --------------------------------------------------------------------------- options


def test_token_never_appears_in_repr() -> None:
    opts = FormatOptions(format="gitlab", token=TOKEN)
    assert TOKEN not in repr(opts)
    assert TOKEN not in str(opts)
    assert opts.token == TOKEN


def test_unknown_format_and_missing_template_raise() -> None:
    event = example_event(EventType.MODEL_VERSION_CREATED)
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render(event, "d", FormatOptions(format="xml"))
    with pytest.raises(ValueError, match="needs a template"):
        render(event, "d", FormatOptions(format="template"))


def test_default_options_are_the_watcher_format() -> None:
    event = example_event(EventType.MODEL_VERSION_CREATED)
    assert render(event, "d") == render(event, "d", FormatOptions())


# --------------------------------------------------------------------------- renames


def test_a_rename_carries_both_names_in_every_format() -> None:
    """MLflow has no native rename event: each format gets the new name where it puts the
    model's, and the old one as previous_name (PREVIOUS_NAME in CI variables)."""
    event = example_event(EventType.REGISTERED_MODEL_RENAMED)
    assert (event.model_name, event.previous_name) == ("fraud-model", "fraud-model-v1")
    watcher = as_json("watcher", EventType.REGISTERED_MODEL_RENAMED)
    assert (watcher["model_name"], watcher["previous_name"]) == ("fraud-model", "fraud-model-v1")
    assert watcher["model_version"] is None
    databricks = as_json("databricks", EventType.REGISTERED_MODEL_RENAMED)
    assert (databricks["model_name"], databricks["previous_name"]) == (
        "fraud-model",
        "fraud-model-v1",
    )
    assert "version" not in databricks
    mlflow = as_json("mlflow", EventType.REGISTERED_MODEL_RENAMED)
    assert mlflow["data"] == {"name": "fraud-model", "previous_name": "fraud-model-v1"}
    client = as_json("github", EventType.REGISTERED_MODEL_RENAMED)["client_payload"]
    assert (client["model_name"], client["details"]["previous_name"]) == (
        "fraud-model",
        "fraud-model-v1",
    )
    form = as_form("gitlab", EventType.REGISTERED_MODEL_RENAMED)
    assert form["variables[MODEL_NAME]"] == "fraud-model"
    assert form["variables[PREVIOUS_NAME]"] == "fraud-model-v1"
    assert "variables[MODEL_VERSION]" not in form
