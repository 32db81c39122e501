"""The default ("watcher") payload: exactly the fields docs/events-and-formats.md section 2
documents (kept here as an independent list, not imported from the code)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.model import Event, EventType
from watcher.payloads import FormatOptions, render, watcher_payload

DOCUMENTED_FIELDS = {
    "event",
    "event_id",
    "timestamp",
    "model_name",
    "model_version",
    "from_stage",
    "to_stage",
    "user_id",
    "webhook_id",
}


def stage_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": "0123456789abcdef0123456789abcdef",
        "type": EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        "model_name": "my-classification-model",
        "timestamp": 1_678_886_400_000,
        "model_version": "3",
        "version_creation_timestamp": 1_678_000_000_000,
        "user_id": "admin",
        "from_stage": "Staging",
        "to_stage": "Production",
    }
    fields.update(overrides)
    return Event(**fields)


def decoded(event: Event, webhook_id: str = "deploy") -> dict[str, Any]:
    rendered = render(event, webhook_id)
    payload = json.loads(rendered.body.decode("utf-8"))
    assert isinstance(payload, dict)
    return payload


def test_watcher_format_has_exactly_the_design_fields() -> None:
    payload = decoded(stage_event())
    assert payload == {
        "event": "MODEL_VERSION_TRANSITIONED_STAGE",
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": 1_678_886_400_000,
        "model_name": "my-classification-model",
        "model_version": "3",
        "from_stage": "Staging",
        "to_stage": "Production",
        "user_id": "admin",
        "webhook_id": "deploy",
    }
    assert set(payload) == DOCUMENTED_FIELDS


def test_source_and_run_id_are_added_when_set() -> None:
    payload = decoded(stage_event(source="models:/m/3", run_id="abc123"))
    assert set(payload) == DOCUMENTED_FIELDS | {"source", "run_id"}
    assert payload["source"] == "models:/m/3"
    assert payload["run_id"] == "abc123"


@pytest.mark.parametrize(("source", "run_id"), [("", ""), (None, None)])
def test_empty_source_and_run_id_are_left_out(source: str | None, run_id: str | None) -> None:
    assert set(decoded(stage_event(source=source, run_id=run_id))) == DOCUMENTED_FIELDS


def test_specific_stage_event_keeps_the_shape() -> None:
    event = stage_event(type=EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED, to_stage="Archived")
    payload = decoded(event)
    assert set(payload) == DOCUMENTED_FIELDS
    assert payload["event"] == "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED"
    assert payload["to_stage"] == "Archived"


def test_empty_user_id_is_sent_as_an_empty_string() -> None:
    payload = decoded(stage_event(user_id=""))
    assert payload["user_id"] == ""


def test_webhook_id_is_the_webhook_name() -> None:
    assert decoded(stage_event(), "ci-pipeline")["webhook_id"] == "ci-pipeline"


def test_content_type_is_json() -> None:
    assert render(stage_event(), "deploy").content_type == "application/json"


def test_body_is_valid_utf8_json_for_non_ascii_names() -> None:
    event = stage_event(model_name="modèle-détection-欺诈-🚀", user_id="josé")
    body = render(event, "deploy").body
    assert isinstance(body, bytes)
    payload = json.loads(body.decode("utf-8"))
    assert payload["model_name"] == "modèle-détection-欺诈-🚀"
    assert payload["user_id"] == "josé"


def test_body_matches_the_payload_dict_and_is_deterministic() -> None:
    event = stage_event(source="s", run_id="r")
    first = render(event, "deploy").body
    assert first == render(event, "deploy").body
    assert json.loads(first) == watcher_payload(event, "deploy")


def test_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(stage_event(), "deploy", FormatOptions(format="xml"))
