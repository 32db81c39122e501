"""User templates: rendered in Jinja2's sandbox, validated against every event before use."""

from __future__ import annotations

import json

import pytest

from watcher.model import EventType
from watcher.payloads import (
    FormatOptions,
    TemplateError,
    compile_template,
    example_event,
    render,
    validate_template,
    watcher_payload,
)

ALL_TYPES = list(EventType)

DEPLOY_TEMPLATE = """{
  "ref": "deploy/{{ model_name }}",
  "inputs": {
    "model": {{ model_name | tojson }},
    "version": {{ model_version | tojson }},
    "stage": {{ to_stage | tojson }},
    "event": {{ event.event | tojson }},
    "hook": {{ webhook_id | tojson }}
  }
}"""


def render_template(source: str, event_type: EventType, content_type: str | None = None) -> bytes:
    options = FormatOptions(
        format="template", template=compile_template(source), content_type=content_type
    )
    rendered = render(example_event(event_type), "deploy", options)
    assert rendered.content_type == (content_type or "application/json")
    return rendered.body


def test_a_template_renders_with_the_event_fields() -> None:
    body = json.loads(render_template(DEPLOY_TEMPLATE, EventType.MODEL_VERSION_TRANSITIONED_STAGE))
    assert body == {
        "ref": "deploy/fraud-model",
        "inputs": {
            "model": "fraud-model",
            "version": "3",
            "stage": "Production",
            "event": "MODEL_VERSION_TRANSITIONED_STAGE",
            "hook": "deploy",
        },
    }


def test_event_is_the_whole_watcher_payload() -> None:
    body = render_template("{{ event | tojson }}", EventType.MODEL_VERSION_ALIAS_CREATED)
    event = example_event(EventType.MODEL_VERSION_ALIAS_CREATED)
    assert json.loads(body) == watcher_payload(event, "deploy")


def test_text_template_with_its_own_content_type_and_no_escaping() -> None:
    body = render_template(
        "{{ model_name }} <v{{ model_version }}> & {{ tags.validation_status }}",
        EventType.MODEL_VERSION_CREATED,
        content_type="text/plain",
    )
    assert body == b"fraud-model <v3> & pending"


def test_the_deploy_template_is_valid_for_stage_events() -> None:
    stage_events = [t for t in ALL_TYPES if "TRANSITIONED" in t.value]
    assert validate_template(compile_template(DEPLOY_TEMPLATE), stage_events, "deploy") == []


# --------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("{\n  {{ model_name }\n}", 2),
        ("ok\nok\n{% if model_name %}\nno end", 3),
        ("{{ model_name | no_such_filter }}", 1),
        ("a\nb\nc\n{% for x in %}{% endfor %}", 4),
    ],
)
def test_syntax_errors_name_the_line(source: str, line: int) -> None:
    with pytest.raises(TemplateError, match=rf"^line {line}: "):
        compile_template(source)


# --------------------------------------------------------------------------- validation


def test_an_undefined_variable_is_found_with_its_line_and_event() -> None:
    template = compile_template('{\n  "a": {{ model_name | tojson }},\n  "b": {{ foo }}\n}')
    problems = validate_template(template, [EventType.MODEL_VERSION_CREATED], "deploy")
    assert problems == ["line 3: 'foo' is undefined (rendering MODEL_VERSION_CREATED)"]


def test_a_field_missing_from_one_event_type_is_reported_for_that_type() -> None:
    template = compile_template('{"stage": {{ to_stage | tojson }}}')
    problems = validate_template(
        template,
        [EventType.MODEL_VERSION_TRANSITIONED_STAGE, EventType.MODEL_VERSION_ALIAS_CREATED],
        "deploy",
    )
    assert problems == ["line 1: 'to_stage' is undefined (rendering MODEL_VERSION_ALIAS_CREATED)"]


def test_the_same_mistake_is_reported_once_for_every_event() -> None:
    template = compile_template("{{ nope }}")
    [problem] = validate_template(template, ALL_TYPES, "deploy")
    assert problem.startswith("line 1: 'nope' is undefined (rendering ")
    assert all(t.value in problem for t in ALL_TYPES)


def test_an_optional_field_must_be_guarded() -> None:
    bare = compile_template('{"run": {{ run_id | tojson }}}')
    [problem] = validate_template(bare, [EventType.MODEL_VERSION_CREATED], "deploy")
    assert "'run_id' is undefined" in problem
    assert "MODEL_VERSION_CREATED without" in problem
    assert "run_id" in problem.split("without", 1)[1]
    guarded = compile_template('{"run": {{ run_id | default(none) | tojson }}}')
    assert validate_template(guarded, [EventType.MODEL_VERSION_CREATED], "deploy") == []
    tested = compile_template(
        '{% if run_id is defined %}{"run": "{{ run_id }}"}{% else %}{}{% endif %}'
    )
    assert validate_template(tested, [EventType.MODEL_VERSION_CREATED], "deploy") == []


def test_json_output_is_checked_for_json_content_types() -> None:
    # Quoting by hand breaks on the example description, which holds quotes and a newline.
    template = compile_template('{"description": "{{ description }}"}')
    [problem] = validate_template(template, [EventType.MODEL_VERSION_CREATED], "deploy")
    assert problem.startswith("output is not valid JSON")
    assert "(rendering MODEL_VERSION_CREATED)" in problem
    fixed = compile_template('{"description": {{ description | tojson }}}')
    assert validate_template(fixed, [EventType.REGISTERED_MODEL_CREATED], "deploy") == []


def test_json_is_not_required_of_other_content_types() -> None:
    template = compile_template("model {{ model_name }} changed")
    types = [EventType.MODEL_VERSION_DELETED]
    assert validate_template(template, types, "d", content_type="text/plain") == []
    assert validate_template(template, types, "d", content_type="application/vnd.x+json") != []
    assert validate_template(template, types, "d") != [], "the default content type is JSON"


def test_a_runtime_error_is_reported_with_its_line() -> None:
    template = compile_template("{\n\n{{ 1 // 0 }}}")
    [problem] = validate_template(template, [EventType.MODEL_VERSION_DELETED], "deploy")
    assert problem.startswith("line 3: ZeroDivisionError")


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ model_name.__class__.__mro__[1].__subclasses__() }}",
        "{{ event.__class__.__init__.__globals__ }}",
        "{{ model_name.format.__globals__ }}",
    ],
)
def test_the_sandbox_blocks_attribute_escapes(source: str) -> None:
    template = compile_template(source)
    problems = validate_template(template, [EventType.MODEL_VERSION_CREATED], "deploy")
    assert len(problems) == 1
    assert problems[0].startswith("line 1: ")
    assert "unsafe" in problems[0]
    assert "(rendering MODEL_VERSION_CREATED)" in problems[0]


def test_a_sandbox_violation_at_delivery_raises_template_error() -> None:
    options = FormatOptions(format="template", template=compile_template("{{ ''.__class__ }}"))
    with pytest.raises(
        TemplateError, match=r"^line 1: .*unsafe.*\(rendering MODEL_VERSION_CREATED\)"
    ):
        render(example_event(EventType.MODEL_VERSION_CREATED), "deploy", options)


def test_compiled_templates_compare_by_source_and_do_not_print_it() -> None:
    source = '{"secretish": "abc"}'
    assert compile_template(source) == compile_template(source)
    assert hash(compile_template(source)) == hash(compile_template(source))
    assert "secretish" not in repr(
        FormatOptions(format="template", template=compile_template(source))
    )
