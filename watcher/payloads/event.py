"""What every format shares: the watcher's own payload of an event, its one-line description,
the rendered body and the options a webhook sets for its format.

Every renderer is a pure function of the event, the webhook id and the :class:`FormatOptions`:
the same event renders to the same bytes on every retry, so a signature over the body is stable
and receivers can compare redeliveries byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher.model import (
    ALIAS_EVENTS,
    NO_STAGE,
    PROMPT_EVENTS,
    STAGE_EVENTS,
    TAG_DELETED_EVENTS,
    TAG_SET_EVENTS,
    Event,
    EventType,
)
from watcher.payloads.links import NO_CONTEXT, PayloadContext, event_links

if TYPE_CHECKING:
    from watcher.payloads.template import CompiledTemplate

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class FormatOptions:
    """How one webhook wants its body. Only the fields of its format are used."""

    format: str = "watcher"
    event_type: str | None = None
    """github: the repository_dispatch event_type; default the event name in lower case."""
    ref: str = "main"
    """gitlab: the branch or tag the pipeline runs for."""
    token: str | None = field(default=None, repr=False)
    """gitlab trigger token / jenkins build token: a secret, sent in the body, never in repr."""
    template: CompiledTemplate | None = None
    content_type: str | None = None
    """template: the Content-Type of the rendered body; default application/json."""
    context: PayloadContext = NO_CONTEXT
    """What the config adds to every format that has room for it: UI links, the workspace."""


def watcher_payload(
    event: Event, webhook_id: str, context: PayloadContext = NO_CONTEXT
) -> dict[str, Any]:
    """The default shape: the fields MLflow users already know, plus event-specific ones, then
    the context (:func:`context_fields`)."""
    payload: dict[str, Any] = {
        "event": event.type.value,
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "model_name": event.model_name,
        "model_version": event.model_version,
    }
    if event.type in STAGE_EVENTS:
        payload["from_stage"] = event.from_stage
        payload["to_stage"] = event.to_stage
    payload["user_id"] = event.user_id
    payload["webhook_id"] = webhook_id
    if event.source:
        payload["source"] = event.source
    if event.run_id:
        payload["run_id"] = event.run_id
    if event.experiment_id:  # known: the run was read (once per run, see watcher.context)
        payload["experiment_id"] = event.experiment_id
    optional: dict[str, Any] = {
        "alias": event.alias,
        "previous_version": event.previous_version,
        "tag_key": event.tag_key,
        "tag_value": event.tag_value,
        "previous_value": event.previous_value,
        "description": event.description,
        "tags": None if event.tags is None else dict(event.tags),
        "previous_name": event.previous_name,
        "template": event.template,
    }
    payload.update((k, v) for k, v in optional.items() if v is not None)
    payload.update(context_fields(event, context))
    return payload


def context_fields(event: Event, context: PayloadContext) -> dict[str, str]:
    """``workspace`` when the watcher reads one, and the UI links when ``ui_url`` is set."""
    fields = {"workspace": context.workspace} if context.workspace else {}
    fields.update(event_links(event, context))
    return fields


def json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def describe(event: Event) -> str:
    """One readable sentence, e.g. "fraud-model v3: Staging → Production"."""
    name, version = event.model_name, event.model_version
    subject = f"{name} v{version}" if version is not None else name
    kind = event.type
    if kind in STAGE_EVENTS:
        return f"{subject}: {event.from_stage or NO_STAGE} → {event.to_stage or NO_STAGE}"
    if kind is EventType.REGISTERED_MODEL_CREATED:
        return f"{name}: registered model created"
    if kind is EventType.REGISTERED_MODEL_DELETED:
        return f"{name}: registered model deleted"
    if kind is EventType.REGISTERED_MODEL_RENAMED:
        return f"{event.previous_name} → {name}: registered model renamed"
    if kind is EventType.MODEL_VERSION_CREATED:
        return f"{subject}: new version"
    if kind is EventType.MODEL_VERSION_DELETED:
        return f"{subject}: version deleted"
    if kind in TAG_SET_EVENTS or kind in TAG_DELETED_EVENTS:
        return _describe_tag(_prompt_subject(event) if kind in PROMPT_EVENTS else subject, event)
    if kind in ALIAS_EVENTS:
        return _describe_alias(f"prompt {name}" if kind in PROMPT_EVENTS else name, event)
    if kind in PROMPT_EVENTS:
        return _describe_prompt(event)
    return f"{subject}: {kind.value}"  # pragma: no cover - every type is handled above


def _prompt_subject(event: Event) -> str:
    name, version = event.model_name, event.model_version
    return f"prompt {name} v{version}" if version is not None else f"prompt {name}"


def _describe_prompt(event: Event) -> str:
    """E.g. "prompt greeting: created", "prompt greeting v2: new version"."""
    subject = _prompt_subject(event)
    return {
        EventType.PROMPT_CREATED: f"{subject}: created",
        EventType.PROMPT_DELETED: f"{subject}: deleted",
        EventType.PROMPT_VERSION_CREATED: f"{subject}: new version",
        EventType.PROMPT_VERSION_DELETED: f"{subject}: version deleted",
    }.get(event.type, f"{subject}: {event.type.value}")


def _describe_tag(subject: str, event: Event) -> str:
    if event.type in TAG_DELETED_EVENTS:
        was = f" (was {event.previous_value!r})" if event.previous_value is not None else ""
        return f"{subject}: tag {event.tag_key!r} deleted{was}"
    if event.previous_value is not None:
        return (
            f"{subject}: tag {event.tag_key!r} changed from {event.previous_value!r} "
            f"to {event.tag_value!r}"
        )
    return f"{subject}: tag {event.tag_key!r} set to {event.tag_value!r}"


def _describe_alias(name: str, event: Event) -> str:
    version = event.model_version
    if event.type in (EventType.MODEL_VERSION_ALIAS_DELETED, EventType.PROMPT_ALIAS_DELETED):
        was = f" (was v{version})" if version is not None else ""
        return f"{name}@{event.alias} removed{was}"
    if event.previous_version is not None:
        return f"{name}@{event.alias} moved from v{event.previous_version} to v{version}"
    return f"{name}@{event.alias} set to v{version}"
