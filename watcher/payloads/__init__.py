"""Event -> the exact body bytes sent to a webhook, for each format.

Every renderer is a pure function of the event, the webhook id and the :class:`FormatOptions`:
the same event renders to the same bytes on every retry, so a signature over the body is stable
and receivers can compare redeliveries byte for byte.

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
=====================================  ===================  ==================  ==================

The envelope's ``timestamp`` is the event's registry timestamp in ISO 8601 UTC (MLflow uses the
send time; the event time keeps the body identical on every retry).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import StrictUndefined, Undefined
from jinja2 import Template as _JinjaTemplate
from jinja2 import TemplateSyntaxError as _JinjaSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from watcher.model import NO_STAGE, STAGE_EVENTS, Event, EventType, make_event_id
from watcher.payloads.formats import FORMATS

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

GITHUB_MAX_EVENT_TYPE = 100
GITHUB_MAX_KEYS = 10
GITHUB_MAX_BODY = 60_000
"""Bytes of a repository_dispatch body; GitHub refuses a client_payload over 65,535 characters."""


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


class TemplateError(Exception):
    """A template that cannot be compiled or rendered; the message names the line."""


class CompiledTemplate:
    """A user template compiled once in the sandbox (see :func:`compile_template`)."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str, template: _JinjaTemplate) -> None:
        self.source = source
        self._template = template

    def render(self, variables: Mapping[str, Any]) -> str:
        """The rendered text; jinja's own exceptions propagate (see :func:`_template_problem`)."""
        return self._template.render(variables)

    def __repr__(self) -> str:
        return f"CompiledTemplate(<{len(self.source)} chars>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledTemplate) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


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


# --------------------------------------------------------------------------- the watcher shape


def watcher_payload(event: Event, webhook_id: str) -> dict[str, Any]:
    """The default shape: the fields MLflow users already know, plus event-specific ones."""
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
    optional: dict[str, Any] = {
        "alias": event.alias,
        "previous_version": event.previous_version,
        "tag_key": event.tag_key,
        "tag_value": event.tag_value,
        "previous_value": event.previous_value,
        "description": event.description,
        "tags": None if event.tags is None else dict(event.tags),
    }
    payload.update((k, v) for k, v in optional.items() if v is not None)
    return payload


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def _render_watcher(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    return Rendered(_json(watcher_payload(event, webhook_id)), JSON)


# --------------------------------------------------------------------------- readable sentences


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
    if kind is EventType.MODEL_VERSION_CREATED:
        return f"{subject}: new version"
    if kind is EventType.MODEL_VERSION_DELETED:
        return f"{subject}: version deleted"
    if kind is EventType.MODEL_VERSION_TAG_SET:
        if event.previous_value is not None:
            return (
                f"{subject}: tag {event.tag_key!r} changed from {event.previous_value!r} "
                f"to {event.tag_value!r}"
            )
        return f"{subject}: tag {event.tag_key!r} set to {event.tag_value!r}"
    if kind is EventType.MODEL_VERSION_TAG_DELETED:
        was = f" (was {event.previous_value!r})" if event.previous_value is not None else ""
        return f"{subject}: tag {event.tag_key!r} deleted{was}"
    if kind is EventType.MODEL_VERSION_ALIAS_CREATED:
        if event.previous_version is not None:
            return f"{name}@{event.alias} moved from v{event.previous_version} to v{version}"
        return f"{name}@{event.alias} set to v{version}"
    if kind is EventType.MODEL_VERSION_ALIAS_DELETED:
        was = f" (was v{version})" if version is not None else ""
        return f"{name}@{event.alias} removed{was}"
    return f"{subject}: {kind.value}"  # pragma: no cover - every type is handled above


# --------------------------------------------------------------------------- databricks


def _render_databricks(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """Databricks registry webhook fields (``event``, ``webhook_id``, ``event_timestamp``,
    ``model_name``, ``version``, ``to_stage``, ``from_stage``, ``text``); keys that do not apply
    to the event are left out.

    Tag events carry ``tags: [{"key", "value"}]`` as Databricks does; a deleted tag has
    ``"value": null``. Databricks has no alias events; for them the watcher adds ``alias`` and,
    when an alias moved, ``previous_version`` (the version it pointed to before). ``version`` is
    the version the alias points to now (created) or pointed to (deleted).
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
    if event.type is EventType.MODEL_VERSION_TAG_SET:
        body["tags"] = [{"key": event.tag_key, "value": event.tag_value}]
    elif event.type is EventType.MODEL_VERSION_TAG_DELETED:
        body["tags"] = [{"key": event.tag_key, "value": None}]
    if event.alias is not None:
        body["alias"] = event.alias
        if event.previous_version is not None:
            body["previous_version"] = event.previous_version
    body["text"] = describe(event)
    return Rendered(_json(body), JSON)


# --------------------------------------------------------------------------- mlflow


def mlflow_entity_action(event_type: EventType) -> tuple[str, str]:
    """The (entity, action) of the MLflow envelope for an event (see the module table)."""
    if event_type in STAGE_EVENTS:
        return ("model_version", "stage_transitioned")
    return _MLFLOW_NAMES[event_type]


_MLFLOW_NAMES: Mapping[EventType, tuple[str, str]] = {
    EventType.REGISTERED_MODEL_CREATED: ("registered_model", "created"),
    EventType.REGISTERED_MODEL_DELETED: ("registered_model", "deleted"),
    EventType.MODEL_VERSION_CREATED: ("model_version", "created"),
    EventType.MODEL_VERSION_DELETED: ("model_version", "deleted"),
    EventType.MODEL_VERSION_TAG_SET: ("model_version_tag", "set"),
    EventType.MODEL_VERSION_TAG_DELETED: ("model_version_tag", "deleted"),
    EventType.MODEL_VERSION_ALIAS_CREATED: ("model_version_alias", "created"),
    EventType.MODEL_VERSION_ALIAS_DELETED: ("model_version_alias", "deleted"),
}


def _mlflow_data(event: Event) -> dict[str, Any]:
    name, version, kind = event.model_name, event.model_version, event.type
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
            "description": event.description,
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
    return {"name": name}  # REGISTERED_MODEL_DELETED


def iso_timestamp(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 in UTC, the way MLflow writes its envelope timestamp."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()


def _render_mlflow(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    entity, action = mlflow_entity_action(event.type)
    envelope = {
        "entity": entity,
        "action": action,
        "timestamp": iso_timestamp(event.timestamp),
        "data": _mlflow_data(event),
    }
    # json.dumps with its defaults, as mlflow/webhooks/delivery.py sends it.
    return Rendered(json.dumps(envelope).encode("utf-8"), JSON)


# --------------------------------------------------------------------------- github

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


def _render_github(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """A repository_dispatch body: ``{"event_type", "client_payload"}``.

    ``client_payload`` holds :data:`_GITHUB_TOP_LEVEL` at the top and the other watcher fields
    under ``details``. A body that would exceed GitHub's size limit is shortened step by step
    (long strings cut, then tags, then details dropped) and ``details.truncated`` is set.
    """
    payload = watcher_payload(event, webhook_id)
    client: dict[str, Any] = {k: payload.pop(k) for k in _GITHUB_TOP_LEVEL if k in payload}
    client["details"] = payload
    event_type = github_event_type(event, options)
    body = _json({"event_type": event_type, "client_payload": client})
    for shorten in (_shorten_strings, _shorten_tags, _drop_tags, _drop_details, _cut_everything):
        if len(body) <= GITHUB_MAX_BODY:
            break
        client = shorten(client)
        body = _json({"event_type": event_type, "client_payload": client})
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


# --------------------------------------------------------------------------- gitlab, jenkins


def build_variables(event: Event, webhook_id: str) -> list[tuple[str, str]]:
    """The CI variables of an event, in a fixed order, only those that apply.

    Description and tags are left out: they do not fit flat CI variables (use ``template``).
    """
    payload = watcher_payload(event, webhook_id)
    names = (
        ("EVENT", "event"),
        ("EVENT_ID", "event_id"),
        ("TIMESTAMP", "timestamp"),
        ("MODEL_NAME", "model_name"),
        ("MODEL_VERSION", "model_version"),
        ("FROM_STAGE", "from_stage"),
        ("TO_STAGE", "to_stage"),
        ("ALIAS", "alias"),
        ("PREVIOUS_VERSION", "previous_version"),
        ("TAG_KEY", "tag_key"),
        ("TAG_VALUE", "tag_value"),
        ("PREVIOUS_VALUE", "previous_value"),
        ("RUN_ID", "run_id"),
        ("SOURCE", "source"),
        ("USER_ID", "user_id"),
        ("WEBHOOK_ID", "webhook_id"),
    )
    return [
        (variable, str(payload[key]))
        for variable, key in names
        if payload.get(key) is not None and payload.get(key) != ""
    ]


def _render_gitlab(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """A pipeline trigger form: ``token``, ``ref`` and ``variables[NAME]=value``."""
    fields = [("token", options.token)] if options.token else []
    fields.append(("ref", options.ref))
    fields.extend((f"variables[{k}]", v) for k, v in build_variables(event, webhook_id))
    return Rendered(urlencode(fields).encode("ascii"), FORM)


def _render_jenkins(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    """``buildWithParameters`` form parameters, plus ``token`` when the job needs one."""
    fields = [("token", options.token)] if options.token else []
    fields.extend(build_variables(event, webhook_id))
    return Rendered(urlencode(fields).encode("ascii"), FORM)


# --------------------------------------------------------------------------- slack


def _slack_escape(text: str) -> str:
    # Slack's three control characters in message text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _render_slack(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    return Rendered(_json({"text": _slack_escape(describe(event))}), JSON)


# --------------------------------------------------------------------------- template


def _json_default(value: object) -> object:
    if isinstance(value, Undefined):
        # "'run_id' is undefined", not "StrictUndefined is not JSON serializable".
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _template_dumps(value: object, **kwargs: Any) -> str:
    return json.dumps(value, default=_json_default, **kwargs)


_ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_ENVIRONMENT.policies["json.dumps_function"] = _template_dumps
_TEMPLATE_FILENAME = "<template>"


def compile_template(source: str) -> CompiledTemplate:
    """Compile a user template in the sandbox; a syntax error raises "line N: ..."."""
    try:
        template = _ENVIRONMENT.from_string(source)
    except _JinjaSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message or exc}") from None
    return CompiledTemplate(source, template)


def template_variables(event: Event, webhook_id: str) -> dict[str, Any]:
    """The watcher payload as top-level variables, and the whole of it as ``event``.

    ``event`` is the dict, so the event name is ``{{ event.event }}``.
    """
    payload = watcher_payload(event, webhook_id)
    return {**payload, "event": payload}


def _template_line(exc: BaseException) -> int | None:
    """The template line of the innermost template frame (jinja rewrites tracebacks so)."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = lineno
    return line


def _template_problem(exc: Exception) -> str:
    line = _template_line(exc)
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, TemplateError) and type(exc).__module__ != "jinja2.exceptions":
        message = f"{type(exc).__name__}: {message}"
    return f"line {line}: {message}" if line is not None else message


def _render_text(template: CompiledTemplate, event: Event, webhook_id: str) -> str:
    try:
        return template.render(template_variables(event, webhook_id))
    except Exception as exc:  # user code: any failure is reported the same way
        raise TemplateError(f"{_template_problem(exc)} (rendering {event.type.value})") from exc


def _render_template(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    if options.template is None:
        raise ValueError('the "template" format needs a template')
    text = _render_text(options.template, event, webhook_id)
    return Rendered(text.encode("utf-8"), options.content_type or JSON)


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == JSON or mime.endswith("+json")


_OPTIONAL_FIELDS = ("source", "run_id", "previous_version")
"""Fields a real event of a type may lack where the example has them (empty source and run_id
are left out of the payload; a new alias has no previous version). Description and tags of
created models and versions are always there (possibly empty)."""


def _sparse(event: Event) -> tuple[Event, list[str]]:
    """The example with the fields a real event may lack removed, and their names."""
    dropped = [name for name in _OPTIONAL_FIELDS if getattr(event, name) is not None]
    changes: dict[str, Any] = dict.fromkeys(dropped)
    # A new tag has no previous value; a deleted tag always had one.
    if event.type is EventType.MODEL_VERSION_TAG_SET and event.previous_value is not None:
        dropped.append("previous_value")
        changes["previous_value"] = None
    return replace(event, **changes), dropped


def validate_template(
    template: CompiledTemplate,
    event_types: Iterable[EventType],
    webhook_id: str,
    *,
    content_type: str | None = None,
) -> list[str]:
    """Render an example of every event type; the problems found, each naming line and event.

    Each type is rendered twice: the full example, then the same without the fields a real
    event may lack (source, run_id, previous_version, and previous_value of a new tag), so
    ``{{ run_id }}`` without ``| default(...)`` or ``is defined`` is caught here and not at
    delivery. With a JSON ``content_type`` (the default) the output must parse as JSON.
    The same problem met with several events is reported once, naming them all.
    """
    check_json = _is_json(content_type or JSON)
    # problem -> the events it happened with: the same mistake is reported once, not per event.
    problems: dict[str, list[str]] = {}
    for event_type in event_types:
        full = example_event(event_type)
        sparse, dropped = _sparse(full)
        variants = [(full, event_type.value)]
        if dropped:
            variants.append((sparse, f"{event_type.value} without {', '.join(dropped)}"))
        for event, label in variants:
            try:
                text = template.render(template_variables(event, webhook_id))
            except Exception as exc:  # user code: every failure is a problem
                problems.setdefault(_template_problem(exc), []).append(label)
                break
            if check_json:
                try:
                    json.loads(text)
                except ValueError as exc:
                    problems.setdefault(f"output is not valid JSON: {exc}", []).append(label)
                    break
    return [f"{problem} (rendering {'; '.join(labels)})" for problem, labels in problems.items()]


# --------------------------------------------------------------------------- examples

_EXAMPLE_TIMESTAMP = 1_717_171_200_000
_EXAMPLE_CREATED = 1_717_000_000_000
_EXAMPLE_RUN = "8f3c2a9b1d4e4f6a9c7b2e1d0a5f3c8b"


def example_event(event_type: EventType, model_name: str = "fraud-model") -> Event:
    """A realistic example of each event type (test-webhook, render, template validation).

    Strings hold a double quote and a newline where a user would have them (the description),
    so a JSON template that forgets ``| tojson`` fails validation instead of production.
    """
    version = "3"
    fields: dict[str, Any] = {
        "model_version": version,
        "version_creation_timestamp": _EXAMPLE_CREATED,
        "user_id": "alice@example.com",
        "source": f"models:/m-{_EXAMPLE_RUN[:16]}",
        "run_id": _EXAMPLE_RUN,
    }
    before: Any = None
    after: Any = None
    kind = event_type
    if kind in {EventType.REGISTERED_MODEL_CREATED, EventType.REGISTERED_MODEL_DELETED}:
        fields = {"user_id": "alice@example.com"}
        if kind is EventType.REGISTERED_MODEL_CREATED:
            fields["description"] = 'Flags "card not present" fraud.\nOwned by the risk team.'
            fields["tags"] = {"team": "risk"}
    elif kind is EventType.MODEL_VERSION_CREATED:
        fields["description"] = 'Gradient-boosted trees, "v3" features.\nAUC 0.94 on holdout.'
        fields["tags"] = {"validation_status": "pending"}
    elif kind in STAGE_EVENTS:
        from_stage, to_stage = {
            EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING: (NO_STAGE, "Staging"),
            EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED: ("Production", "Archived"),
        }.get(kind, ("Staging", "Production"))
        fields.update(from_stage=from_stage, to_stage=to_stage)
        before, after = from_stage, to_stage
    elif kind is EventType.MODEL_VERSION_TAG_SET:
        fields.update(tag_key="validation_status", tag_value="passed", previous_value="pending")
        before, after = "pending", "passed"
    elif kind is EventType.MODEL_VERSION_TAG_DELETED:
        fields.update(tag_key="validation_status", previous_value="passed")
        before = "passed"
    elif kind is EventType.MODEL_VERSION_ALIAS_CREATED:
        fields.update(alias="champion", previous_version="2")
        before, after = "2", version
    elif kind is EventType.MODEL_VERSION_ALIAS_DELETED:
        fields.update(alias="champion")
        before = version
    event_id = make_event_id(
        "example",
        kind,
        model_name,
        fields.get("model_version"),
        fields.get("version_creation_timestamp"),
        before,
        after,
        _EXAMPLE_TIMESTAMP,
    )
    return Event(
        event_id=event_id,
        type=kind,
        model_name=model_name,
        timestamp=_EXAMPLE_TIMESTAMP,
        **fields,
    )


# --------------------------------------------------------------------------- entry point

_RENDERERS: Mapping[str, Callable[[Event, str, FormatOptions], Rendered]] = {
    "watcher": _render_watcher,
    "databricks": _render_databricks,
    "mlflow": _render_mlflow,
    "github": _render_github,
    "gitlab": _render_gitlab,
    "jenkins": _render_jenkins,
    "slack": _render_slack,
    "template": _render_template,
}
assert tuple(_RENDERERS) == FORMATS

_DEFAULT_OPTIONS = FormatOptions()


def render(event: Event, webhook_id: str, options: FormatOptions | None = None) -> Rendered:
    """The exact body and Content-Type for one event sent to one webhook.

    Raises ValueError for an unknown format (or ``template`` without a template) and
    TemplateError when a user template fails on this event.
    """
    options = options or _DEFAULT_OPTIONS
    renderer = _RENDERERS.get(options.format)
    if renderer is None:
        raise ValueError(f"unknown format {options.format!r}")
    return renderer(event, webhook_id, options)
