"""The formats of registries and chat: ``watcher`` (the default), ``databricks``, ``mlflow``
and ``slack``.

``mlflow`` format: the MLflow 3 native envelope ``{"entity", "action", "timestamp", "data"}``.
For the events MLflow itself sends, ``data`` holds exactly MLflow's fields
(``mlflow.webhooks.types``); the events MLflow never sends use the same envelope with the
entity/action pairs marked "watcher" below:

=====================================  ===================  ==================  ==================
event                                  entity               action              data
=====================================  ===================  ==================  ==================
REGISTERED_MODEL_CREATED               registered_model     created             MLflow's: name,
                                                                                tags, description
MODEL_VERSION_CREATED                  model_version        created             MLflow's: name,
                                                                                version, source,
                                                                                run_id, tags,
                                                                                description
MODEL_VERSION_TAG_SET                  model_version_tag    set                 MLflow's: name,
                                                                                version, key, value
MODEL_VERSION_TAG_DELETED              model_version_tag    deleted             MLflow's: name,
                                                                                version, key
MODEL_VERSION_ALIAS_CREATED            model_version_alias  created             MLflow's: name,
                                                                                alias, version
MODEL_VERSION_ALIAS_DELETED            model_version_alias  deleted             MLflow's: name,
                                                                                alias
MODEL_VERSION_TRANSITIONED_STAGE and   model_version        stage_transitioned  watcher: name,
the three ..._TRANSITIONED_TO_* ones                        (watcher)           version,
                                                                                from_stage,
                                                                                to_stage
MODEL_VERSION_DELETED                  model_version        deleted (watcher)   watcher: name,
                                                                                version
REGISTERED_MODEL_DELETED               registered_model     deleted (watcher)   watcher: name
REGISTERED_MODEL_RENAMED               registered_model     renamed (watcher)   watcher: name,
                                                                                previous_name
PROMPT_CREATED                         prompt               created             MLflow's: name,
                                                                                tags, description
PROMPT_VERSION_CREATED                 prompt_version       created             MLflow's: name,
                                                                                version, template,
                                                                                tags, description
PROMPT_TAG_SET                         prompt_tag           set                 MLflow's: name,
                                                                                key, value
PROMPT_TAG_DELETED                     prompt_tag           deleted             MLflow's: name, key
PROMPT_VERSION_TAG_SET                 prompt_version_tag   set                 MLflow's: name,
                                                                                version, key, value
PROMPT_VERSION_TAG_DELETED             prompt_version_tag   deleted             MLflow's: name,
                                                                                version, key
PROMPT_ALIAS_CREATED                   prompt_alias         created             MLflow's: name,
                                                                                alias, version
PROMPT_ALIAS_DELETED                   prompt_alias         deleted             MLflow's: name,
                                                                                alias
PROMPT_VERSION_DELETED                 prompt_version       deleted (watcher)   watcher: name,
                                                                                version
PROMPT_DELETED                         prompt               deleted (watcher)   watcher: name
=====================================  ===================  ==================  ==================

A prompt's and a prompt version's ``tags`` are MLflow's: without the tags MLflow keeps for
itself at creation (``mlflow.prompt.is_prompt``, ``_mlflow_prompt_type``, and the template's
``mlflow.prompt.text``, sent as ``template``).

The envelope's ``timestamp`` is the event's registry timestamp in ISO 8601 UTC (MLflow uses the
send time; the event time keeps the body identical on every retry).

Beside ``data``, never in it (``data`` stays exactly MLflow's), and only when the config asks:
``workspace`` where MLflow puts it when workspaces are on (here: with ``[mlflow] workspace``),
and ``model_url`` / ``model_version_url`` with ``[mlflow] ui_url``. MLflow's envelope is an open
JSON object (it adds ``workspace`` itself only on some servers), so a receiver written for it
reads ``data`` and ignores what it does not know. ``experiment_id`` is not added: MLflow sends
none, and a receiver of this format gets exactly MLflow's keys unless the config adds some
(the ``watcher``, CI and template formats carry it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from watcher.model import (
    STAGE_EVENTS,
    TAG_DELETED_EVENTS,
    TAG_SET_EVENTS,
    Event,
    EventType,
)
from watcher.payloads.event import (
    JSON,
    FormatOptions,
    Rendered,
    context_fields,
    describe,
    json_body,
    watcher_payload,
)
from watcher.payloads.links import event_links


def render_watcher(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    return Rendered(json_body(watcher_payload(event, webhook_id, options.context)), JSON)


def render_databricks(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """Databricks registry webhook fields (``event``, ``webhook_id``, ``event_timestamp``,
    ``model_name``, ``version``, ``to_stage``, ``from_stage``, ``text``); keys that do not apply
    to the event are left out.

    Tag events (of versions, prompts and prompt versions) carry ``tags: [{"key", "value"}]`` as
    Databricks does; a deleted tag has ``"value": null``. Databricks has no prompt events: they
    use the same fields, ``model_name`` the prompt's name, ``version`` the prompt version's.
    Databricks has no alias events; for them the watcher adds ``alias`` and,
    when an alias moved, ``previous_version`` (the version it pointed to before). ``version`` is
    the version the alias points to now (created) or pointed to (deleted). Nor has it a rename
    event: for one the watcher adds ``previous_name`` (``model_name`` is the new name).
    """
    body: dict[str, Any] = {
        "event": event.type.value,
        "webhook_id": webhook_id,
        "event_timestamp": event.timestamp,
        "model_name": event.model_name,
    }
    if event.model_version is not None:
        body["version"] = event.model_version
    if event.type in STAGE_EVENTS:
        body["to_stage"] = event.to_stage
        body["from_stage"] = event.from_stage
    if event.type in TAG_SET_EVENTS:
        body["tags"] = [{"key": event.tag_key, "value": event.tag_value}]
    elif event.type in TAG_DELETED_EVENTS:
        body["tags"] = [{"key": event.tag_key, "value": None}]
    if event.previous_name is not None:
        body["previous_name"] = event.previous_name
    if event.alias is not None:
        body["alias"] = event.alias
        if event.previous_version is not None:
            body["previous_version"] = event.previous_version
    body["text"] = describe(event)
    return Rendered(json_body(body), JSON)


def mlflow_entity_action(event_type: EventType) -> tuple[str, str]:
    """The (entity, action) of the MLflow envelope for an event (see the module table)."""
    if event_type in STAGE_EVENTS:
        return ("model_version", "stage_transitioned")
    return _MLFLOW_NAMES[event_type]


_MLFLOW_NAMES: Mapping[EventType, tuple[str, str]] = {
    EventType.REGISTERED_MODEL_CREATED: ("registered_model", "created"),
    EventType.REGISTERED_MODEL_DELETED: ("registered_model", "deleted"),
    EventType.REGISTERED_MODEL_RENAMED: ("registered_model", "renamed"),
    EventType.MODEL_VERSION_CREATED: ("model_version", "created"),
    EventType.MODEL_VERSION_DELETED: ("model_version", "deleted"),
    EventType.MODEL_VERSION_TAG_SET: ("model_version_tag", "set"),
    EventType.MODEL_VERSION_TAG_DELETED: ("model_version_tag", "deleted"),
    EventType.MODEL_VERSION_ALIAS_CREATED: ("model_version_alias", "created"),
    EventType.MODEL_VERSION_ALIAS_DELETED: ("model_version_alias", "deleted"),
    EventType.PROMPT_CREATED: ("prompt", "created"),
    EventType.PROMPT_DELETED: ("prompt", "deleted"),
    EventType.PROMPT_TAG_SET: ("prompt_tag", "set"),
    EventType.PROMPT_TAG_DELETED: ("prompt_tag", "deleted"),
    EventType.PROMPT_VERSION_CREATED: ("prompt_version", "created"),
    EventType.PROMPT_VERSION_DELETED: ("prompt_version", "deleted"),
    EventType.PROMPT_VERSION_TAG_SET: ("prompt_version_tag", "set"),
    EventType.PROMPT_VERSION_TAG_DELETED: ("prompt_version_tag", "deleted"),
    EventType.PROMPT_ALIAS_CREATED: ("prompt_alias", "created"),
    EventType.PROMPT_ALIAS_DELETED: ("prompt_alias", "deleted"),
}


def _prompt_data(event: Event) -> dict[str, Any] | None:
    """MLflow's ``data`` of a prompt event (mlflow.webhooks.types and the server's handlers),
    or None for the events that are not about prompts."""
    name, version, kind = event.model_name, event.model_version, event.type
    if kind is EventType.PROMPT_CREATED:
        # The request's description, as for registered models: "" when none was given.
        return {"name": name, "tags": dict(event.tags or {}), "description": event.description}
    if kind is EventType.PROMPT_VERSION_CREATED:
        return {
            "name": name,
            "version": version,
            "template": event.template,
            "tags": dict(event.tags or {}),
            "description": event.description or None,  # `or None` in MLflow's handler
        }
    if kind in (EventType.PROMPT_TAG_SET, EventType.PROMPT_TAG_DELETED):
        data = {"name": name, "key": event.tag_key}
        return data if kind is EventType.PROMPT_TAG_DELETED else {**data, "value": event.tag_value}
    if kind is EventType.PROMPT_VERSION_TAG_SET:
        return {"name": name, "version": version, "key": event.tag_key, "value": event.tag_value}
    if kind is EventType.PROMPT_VERSION_TAG_DELETED:
        return {"name": name, "version": version, "key": event.tag_key}
    if kind is EventType.PROMPT_ALIAS_CREATED:
        return {"name": name, "alias": event.alias, "version": version}
    if kind is EventType.PROMPT_ALIAS_DELETED:
        return {"name": name, "alias": event.alias}
    if kind is EventType.PROMPT_VERSION_DELETED:  # MLflow sends no native deletion events
        return {"name": name, "version": version}
    if kind is EventType.PROMPT_DELETED:
        return {"name": name}
    return None


def _mlflow_data(event: Event) -> dict[str, Any]:
    name, version, kind = event.model_name, event.model_version, event.type
    prompt = _prompt_data(event)
    if prompt is not None:
        return prompt
    if kind in STAGE_EVENTS:
        return {
            "name": name,
            "version": version,
            "from_stage": event.from_stage,
            "to_stage": event.to_stage,
        }
    if kind is EventType.REGISTERED_MODEL_CREATED:
        return {"name": name, "tags": dict(event.tags or {}), "description": event.description}
    if kind is EventType.MODEL_VERSION_CREATED:
        return {
            "name": name,
            "version": version,
            "source": event.source or "",
            "run_id": event.run_id or None,
            "tags": dict(event.tags or {}),
            # MLflow sends null for a version without description (`or None` in its handler),
            # but "" for a registered model without one (the request's unset field).
            "description": event.description or None,
        }
    if kind is EventType.MODEL_VERSION_TAG_SET:
        return {"name": name, "version": version, "key": event.tag_key, "value": event.tag_value}
    if kind is EventType.MODEL_VERSION_TAG_DELETED:
        return {"name": name, "version": version, "key": event.tag_key}
    if kind is EventType.MODEL_VERSION_ALIAS_CREATED:
        return {"name": name, "alias": event.alias, "version": version}
    if kind is EventType.MODEL_VERSION_ALIAS_DELETED:
        return {"name": name, "alias": event.alias}
    if kind is EventType.MODEL_VERSION_DELETED:
        return {"name": name, "version": version}
    if kind is EventType.REGISTERED_MODEL_RENAMED:  # MLflow sends no native rename event
        return {"name": name, "previous_name": event.previous_name}
    return {"name": name}  # REGISTERED_MODEL_DELETED


def iso_timestamp(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 in UTC, the way MLflow writes its envelope timestamp."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()


def render_mlflow(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    entity, action = mlflow_entity_action(event.type)
    envelope: dict[str, Any] = {
        "entity": entity,
        "action": action,
        "timestamp": iso_timestamp(event.timestamp),
        "data": _mlflow_data(event),
    }
    # Beside data, and only what the config asks for: workspace, links.
    envelope.update(context_fields(event, options.context))
    # json.dumps with its defaults, as mlflow/webhooks/delivery.py sends it.
    return Rendered(json.dumps(envelope).encode("utf-8"), JSON)


def _slack_escape(text: str) -> str:
    # Slack's three control characters in message text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """One line of text; with ``[mlflow] ui_url``, a link to the version (or the model) in the
    MLflow UI after it, in Slack's ``<url|label>`` form."""
    text = _slack_escape(describe(event))
    links = event_links(event, options.context)
    url = links.get("model_version_url") or links.get("model_url")
    if url is not None:
        text = f"{text} <{url}|View in MLflow>"
    return Rendered(json_body({"text": text}), JSON)
