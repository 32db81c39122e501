"""The formats that trigger CI: ``github`` (repository_dispatch), ``gitlab`` (a pipeline
trigger) and ``jenkins`` (buildWithParameters)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from watcher.model import Event
from watcher.payloads.event import FORM, JSON, FormatOptions, Rendered, json_body, watcher_payload
from watcher.payloads.links import NO_CONTEXT, PayloadContext

GITHUB_MAX_EVENT_TYPE = 100
GITHUB_MAX_KEYS = 10
GITHUB_MAX_BODY = 60_000
"""Bytes of a repository_dispatch body; GitHub refuses a client_payload over 65,535 characters."""

_GITHUB_TOP_LEVEL = (
    "event",
    "event_id",
    "timestamp",
    "model_name",
    "model_version",
    "from_stage",
    "to_stage",
    "alias",
    "tag_key",
)
"""client_payload keys kept at the top; everything else goes under "details" (10 keys at most).

The placement is fixed, not chosen per event, so a workflow can always read
``github.event.client_payload.to_stage`` or ``github.event.client_payload.details.run_id``.
"""
assert len(_GITHUB_TOP_LEVEL) + 1 <= GITHUB_MAX_KEYS

_GITHUB_SHORT = 1024
"""Characters a long string keeps when a payload has to be shortened to fit GitHub's limit."""


def github_event_type(event: Event, options: FormatOptions) -> str:
    chosen = options.event_type or event.type.value.lower()
    return chosen[:GITHUB_MAX_EVENT_TYPE]


def render_github(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """A repository_dispatch body: ``{"event_type", "client_payload"}``.

    ``client_payload`` holds :data:`_GITHUB_TOP_LEVEL` at the top and the other watcher fields
    under ``details``. A body that would exceed GitHub's size limit is shortened step by step
    (long strings cut, then tags, then details dropped) and ``details.truncated`` is set.
    """
    payload = watcher_payload(event, webhook_id, options.context)
    client: dict[str, Any] = {k: payload.pop(k) for k in _GITHUB_TOP_LEVEL if k in payload}
    client["details"] = payload
    event_type = github_event_type(event, options)
    body = json_body({"event_type": event_type, "client_payload": client})
    for shorten in (_shorten_strings, _shorten_tags, _drop_tags, _drop_details, _cut_everything):
        if len(body) <= GITHUB_MAX_BODY:
            break
        client = shorten(client)
        body = json_body({"event_type": event_type, "client_payload": client})
    return Rendered(body, JSON)


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _shorten_strings(client: dict[str, Any]) -> dict[str, Any]:
    details = {k: _cut(v, _GITHUB_SHORT) for k, v in client["details"].items()}
    return {**client, "details": {**details, "truncated": True}}


def _shorten_tags(client: dict[str, Any]) -> dict[str, Any]:
    details = dict(client["details"])
    if isinstance(details.get("tags"), dict):
        details["tags"] = {_cut(k, 128): _cut(v, 128) for k, v in details["tags"].items()}
    return {**client, "details": details}


def _drop_tags(client: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in client["details"].items() if k != "tags"}
    return {**client, "details": details}


def _drop_details(client: dict[str, Any]) -> dict[str, Any]:
    return {**client, "details": {"truncated": True}}


def _cut_everything(client: dict[str, Any]) -> dict[str, Any]:
    # Only reachable with absurd names (MLflow caps them far below this).
    return {k: _cut(v, _GITHUB_SHORT) for k, v in client.items()}


def build_variables(
    event: Event, webhook_id: str, context: PayloadContext = NO_CONTEXT
) -> list[tuple[str, str]]:
    """The CI variables of an event, in a fixed order, only those that apply.

    Description and tags are left out: they do not fit flat CI variables (use ``template``).
    """
    payload = watcher_payload(event, webhook_id, context)
    names = (
        ("EVENT", "event"),
        ("EVENT_ID", "event_id"),
        ("TIMESTAMP", "timestamp"),
        ("MODEL_NAME", "model_name"),
        ("PREVIOUS_NAME", "previous_name"),
        ("MODEL_VERSION", "model_version"),
        ("FROM_STAGE", "from_stage"),
        ("TO_STAGE", "to_stage"),
        ("ALIAS", "alias"),
        ("PREVIOUS_VERSION", "previous_version"),
        ("TAG_KEY", "tag_key"),
        ("TAG_VALUE", "tag_value"),
        ("PREVIOUS_VALUE", "previous_value"),
        ("RUN_ID", "run_id"),
        ("EXPERIMENT_ID", "experiment_id"),
        ("SOURCE", "source"),
        ("USER_ID", "user_id"),
        ("WEBHOOK_ID", "webhook_id"),
        ("WORKSPACE", "workspace"),
        ("MODEL_URL", "model_url"),
        ("MODEL_VERSION_URL", "model_version_url"),
    )
    return [
        (variable, str(payload[key]))
        for variable, key in names
        if payload.get(key) is not None and payload.get(key) != ""
    ]


def render_gitlab(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """A pipeline trigger form: ``token``, ``ref`` and ``variables[NAME]=value``."""
    fields = [("token", options.token)] if options.token else []
    fields.append(("ref", options.ref))
    variables = build_variables(event, webhook_id, options.context)
    fields.extend((f"variables[{k}]", v) for k, v in variables)
    return Rendered(urlencode(fields).encode("ascii"), FORM)


def render_jenkins(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """``buildWithParameters`` form parameters, plus ``token`` when the job needs one."""
    fields = [("token", options.token)] if options.token else []
    fields.extend(build_variables(event, webhook_id, options.context))
    return Rendered(urlencode(fields).encode("ascii"), FORM)
