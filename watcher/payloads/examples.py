"""Realistic examples of each event type: for test-webhook, render and template validation.

Strings hold a double quote and a newline where a user would have them (the descriptions), so
a JSON template that forgets ``| tojson`` fails validation instead of production.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watcher.model import NO_STAGE, STAGE_EVENTS, Event, EventType, make_event_id

_EXAMPLE_TIMESTAMP = 1_717_171_200_000
_EXAMPLE_CREATED = 1_717_000_000_000
_EXAMPLE_RUN = "8f3c2a9b1d4e4f6a9c7b2e1d0a5f3c8b"
_EXAMPLE_EXPERIMENT = "427194634811735290"
_EXAMPLE_USER = "alice@example.com"
_EXAMPLE_VERSION = "3"

_Change = tuple[dict[str, Any], Any, Any]
"""An example's own fields, and the before and after values its event id is made of."""

_STAGE_MOVES: Mapping[EventType, tuple[str, str]] = {
    EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING: (NO_STAGE, "Staging"),
    EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED: ("Production", "Archived"),
}
"""The generic transition and the one to Production go from Staging to Production."""

_VERSION_CHANGES: Mapping[EventType, _Change] = {
    EventType.MODEL_VERSION_CREATED: (
        {
            "description": 'Gradient-boosted trees, "v3" features.\nAUC 0.94 on holdout.',
            "tags": {"validation_status": "pending"},
        },
        None,
        None,
    ),
    EventType.MODEL_VERSION_DELETED: ({}, None, None),
    EventType.MODEL_VERSION_TAG_SET: (
        {"tag_key": "validation_status", "tag_value": "passed", "previous_value": "pending"},
        "pending",
        "passed",
    ),
    EventType.MODEL_VERSION_TAG_DELETED: (
        {"tag_key": "validation_status", "previous_value": "passed"},
        "passed",
        None,
    ),
    EventType.MODEL_VERSION_ALIAS_CREATED: (
        {"alias": "champion", "previous_version": "2"},
        "2",
        _EXAMPLE_VERSION,
    ),
    EventType.MODEL_VERSION_ALIAS_DELETED: ({"alias": "champion"}, _EXAMPLE_VERSION, None),
}


_PROMPT_VERSION_CHANGES: Mapping[EventType, _Change] = {
    EventType.PROMPT_VERSION_CREATED: (
        {
            "description": 'Warmer greeting, "first name" only.\nReviewed by support.',
            "tags": {"author": "alice"},
            "template": 'Hello {{name}}! Say "hi" to the {{team}} team.\nKeep it short.',
        },
        None,
        None,
    ),
    EventType.PROMPT_VERSION_DELETED: ({}, None, None),
    EventType.PROMPT_VERSION_TAG_SET: (
        {"tag_key": "review", "tag_value": "approved", "previous_value": "pending"},
        "pending",
        "approved",
    ),
    EventType.PROMPT_VERSION_TAG_DELETED: (
        {"tag_key": "review", "previous_value": "approved"},
        "approved",
        None,
    ),
    EventType.PROMPT_ALIAS_CREATED: (
        {"alias": "production", "previous_version": "2"},
        "2",
        _EXAMPLE_VERSION,
    ),
    EventType.PROMPT_ALIAS_DELETED: ({"alias": "production"}, _EXAMPLE_VERSION, None),
}

_PROMPT_CHANGES: Mapping[EventType, _Change] = {
    EventType.PROMPT_CREATED: (
        {
            "user_id": _EXAMPLE_USER,
            "description": 'Greets a customer, "friendly" tone.\nOwned by support.',
            "tags": {"team": "support"},
        },
        None,
        None,
    ),
    EventType.PROMPT_DELETED: ({"user_id": _EXAMPLE_USER}, None, None),
    EventType.PROMPT_TAG_SET: (
        {"tag_key": "language", "tag_value": "en", "previous_value": "fr"},
        "fr",
        "en",
    ),
    EventType.PROMPT_TAG_DELETED: ({"tag_key": "language", "previous_value": "en"}, "en", None),
}


def example_event(event_type: EventType, model_name: str = "fraud-model") -> Event:
    """A realistic example of the event type, with the id a real one would have."""
    fields, before, after = _example_fields(event_type)
    event_id = make_event_id(
        "example",
        event_type,
        model_name,
        fields.get("model_version"),
        fields.get("version_creation_timestamp"),
        before,
        after,
        _EXAMPLE_TIMESTAMP,
    )
    return Event(
        event_id=event_id,
        type=event_type,
        model_name=model_name,
        timestamp=_EXAMPLE_TIMESTAMP,
        **fields,
    )


def _example_fields(kind: EventType) -> _Change:
    if kind is EventType.REGISTERED_MODEL_CREATED:
        description = 'Flags "card not present" fraud.\nOwned by the risk team.'
        return (
            {"user_id": _EXAMPLE_USER, "description": description, "tags": {"team": "risk"}},
            None,
            None,
        )
    if kind is EventType.REGISTERED_MODEL_DELETED:
        return {"user_id": _EXAMPLE_USER}, None, None
    if kind is EventType.REGISTERED_MODEL_RENAMED:
        return {"user_id": _EXAMPLE_USER, "previous_name": "fraud-model-v1"}, None, None
    if kind in _PROMPT_CHANGES:
        return _PROMPT_CHANGES[kind]
    if kind in _PROMPT_VERSION_CHANGES:
        prompt_version = {
            "model_version": _EXAMPLE_VERSION,
            "version_creation_timestamp": _EXAMPLE_CREATED,
            "user_id": _EXAMPLE_USER,
        }
        change, before, after = _PROMPT_VERSION_CHANGES[kind]
        return {**prompt_version, **change}, before, after
    version = {
        "model_version": _EXAMPLE_VERSION,
        "version_creation_timestamp": _EXAMPLE_CREATED,
        "user_id": _EXAMPLE_USER,
        "source": f"models:/m-{_EXAMPLE_RUN[:16]}",
        "run_id": _EXAMPLE_RUN,
        "experiment_id": _EXAMPLE_EXPERIMENT,
    }
    if kind in STAGE_EVENTS:
        from_stage, to_stage = _STAGE_MOVES.get(kind, ("Staging", "Production"))
        return {**version, "from_stage": from_stage, "to_stage": to_stage}, from_stage, to_stage
    change, before, after = _VERSION_CHANGES[kind]
    return {**version, **change}, before, after
