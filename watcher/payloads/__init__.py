"""Event -> the exact body bytes sent to a webhook, for each format.

One module per family of formats: :mod:`~watcher.payloads.event` (what they share: the
watcher's payload, the one-line description, :class:`FormatOptions`),
:mod:`~watcher.payloads.registries` (``watcher``, ``databricks``, ``mlflow``, ``slack``),
:mod:`~watcher.payloads.ci` (``github``, ``gitlab``, ``jenkins``),
:mod:`~watcher.payloads.template` (a user's template), :mod:`~watcher.payloads.links` (the
MLflow UI links and the workspace the config adds) and :mod:`~watcher.payloads.examples`;
the format names are in :mod:`~watcher.payloads.formats`, which the config reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from watcher.model import Event
from watcher.payloads import ci, registries
from watcher.payloads.ci import (
    GITHUB_MAX_BODY,
    GITHUB_MAX_EVENT_TYPE,
    GITHUB_MAX_KEYS,
    build_variables,
    github_event_type,
)
from watcher.payloads.event import (
    FORM,
    JSON,
    FormatOptions,
    Rendered,
    describe,
    watcher_payload,
)
from watcher.payloads.examples import example_event
from watcher.payloads.formats import FORMATS, TOKEN_FORMATS
from watcher.payloads.links import NO_CONTEXT, PayloadContext, model_url, model_version_url
from watcher.payloads.registries import iso_timestamp, mlflow_entity_action
from watcher.payloads.template import (
    CompiledTemplate,
    TemplateError,
    compile_template,
    render_template,
    template_variables,
    validate_template,
)

__all__ = [
    "FORM",
    "FORMATS",
    "GITHUB_MAX_BODY",
    "GITHUB_MAX_EVENT_TYPE",
    "GITHUB_MAX_KEYS",
    "JSON",
    "NO_CONTEXT",
    "TOKEN_FORMATS",
    "CompiledTemplate",
    "FormatOptions",
    "PayloadContext",
    "Rendered",
    "TemplateError",
    "build_variables",
    "compile_template",
    "describe",
    "example_event",
    "github_event_type",
    "iso_timestamp",
    "mlflow_entity_action",
    "model_url",
    "model_version_url",
    "render",
    "template_variables",
    "validate_template",
    "watcher_payload",
]

_RENDERERS: Mapping[str, Callable[[Event, str, FormatOptions], Rendered]] = {
    "watcher": registries.render_watcher,
    "databricks": registries.render_databricks,
    "mlflow": registries.render_mlflow,
    "github": ci.render_github,
    "gitlab": ci.render_gitlab,
    "jenkins": ci.render_jenkins,
    "slack": registries.render_slack,
    "template": render_template,
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
