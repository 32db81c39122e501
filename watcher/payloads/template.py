"""The ``template`` format: a user's Jinja template, compiled once in a sandbox and checked at
load time against an example of every event it subscribes to.

Jinja is imported when a template is first compiled, not with this module: the config and the
commands that render nothing do not pay for it.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from watcher.model import TAG_SET_EVENTS, Event, EventType
from watcher.payloads.event import JSON, FormatOptions, Rendered, context_fields, watcher_payload
from watcher.payloads.examples import example_event
from watcher.payloads.links import EXAMPLE_CONTEXT, NO_CONTEXT, PayloadContext

if TYPE_CHECKING:
    from jinja2 import Template as _JinjaTemplate
    from jinja2.sandbox import SandboxedEnvironment


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


def _json_default(value: object) -> object:
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        # "'run_id' is undefined", not "StrictUndefined is not JSON serializable".
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _template_dumps(value: object, **kwargs: Any) -> str:
    return json.dumps(value, default=_json_default, **kwargs)


_TEMPLATE_FILENAME = "<template>"


@functools.cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    environment.policies["json.dumps_function"] = _template_dumps
    return environment


def compile_template(source: str) -> CompiledTemplate:
    """Compile a user template in the sandbox; a syntax error raises "line N: ..."."""
    from jinja2 import TemplateSyntaxError

    try:
        template = _environment().from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message or exc}") from None
    return CompiledTemplate(source, template)


def template_variables(
    event: Event, webhook_id: str, context: PayloadContext = NO_CONTEXT
) -> dict[str, Any]:
    """The watcher payload as top-level variables, and the whole of it as ``event``.

    ``event`` is the dict, so the event name is ``{{ event.event }}``.
    """
    payload = watcher_payload(event, webhook_id, context)
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


def _render_text(
    template: CompiledTemplate, event: Event, webhook_id: str, context: PayloadContext
) -> str:
    try:
        return template.render(template_variables(event, webhook_id, context))
    except Exception as exc:  # user code: any failure is reported the same way
        raise TemplateError(f"{_template_problem(exc)} (rendering {event.type.value})") from exc


def render_template(event: Event, webhook_id: str, options: FormatOptions) -> Rendered:
    if options.template is None:
        raise ValueError('the "template" format needs a template')
    text = _render_text(options.template, event, webhook_id, options.context)
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
    if event.type in TAG_SET_EVENTS and event.previous_value is not None:
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

    Each type is rendered twice: the full example (with the links and workspace of an example
    context), then the same without the fields a real event may lack (source, run_id,
    previous_version, previous_value of a new tag, and the context's fields), so
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
        variants = [(full, EXAMPLE_CONTEXT, event_type.value)]
        # What the config adds: so a template works with and without ui_url and workspace.
        dropped += context_fields(full, EXAMPLE_CONTEXT)
        if dropped:
            label = f"{event_type.value} without {', '.join(dropped)}"
            variants.append((sparse, NO_CONTEXT, label))
        for event, context, label in variants:
            try:
                text = template.render(template_variables(event, webhook_id, context))
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
