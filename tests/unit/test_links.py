"""Links and context in payloads: the MLflow UI addresses, ``[mlflow] ui_url`` and
``workspace``, and what each format carries of them and of a version's ``experiment_id``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

from tests.helpers import load_text as load
from tests.unit.test_config import only_problem
from watcher.config import load_config
from watcher.errors import ConfigError
from watcher.model import EventType
from watcher.payloads import (
    FORMATS,
    FormatOptions,
    PayloadContext,
    compile_template,
    example_event,
    model_url,
    model_version_url,
    render,
    validate_template,
)

UI = "https://mlflow.example.com"
LINKED = PayloadContext(ui_url=UI)
TEAM = PayloadContext(ui_url=UI, workspace="team-a")


def body(fmt: str, kind: EventType, context: PayloadContext, **fields: Any) -> dict[str, Any]:
    event = replace(example_event(kind), **fields)
    rendered = render(event, "deploy", FormatOptions(format=fmt, context=context))
    decoded = json.loads(rendered.body)
    assert isinstance(decoded, dict)
    return decoded


def form(fmt: str, kind: EventType, context: PayloadContext) -> dict[str, str]:
    rendered = render(example_event(kind), "deploy", FormatOptions(format=fmt, context=context))
    return {k: v[0] for k, v in parse_qs(rendered.body.decode("ascii")).items()}


# --------------------------------------------------------------------------- the addresses


def test_the_routes_are_the_uis_hash_routes() -> None:
    assert model_url(UI, "fraud-model") == f"{UI}/#/models/fraud-model"
    assert model_version_url(UI, "fraud-model", "3") == f"{UI}/#/models/fraud-model/versions/3"


@pytest.mark.parametrize(
    "name",
    ["a/b", "a#b", "a?b", "a b", "a%b", "päß", "x&y=z", "a|b<c>", "prod.fraud.model"],
)
def test_names_are_quoted_so_the_route_keeps_them_whole(name: str) -> None:
    url = model_version_url(UI, name, "7")
    route = url.removeprefix(f"{UI}/#/models/")
    quoted, _, rest = route.partition("/")
    assert rest == "versions/7"
    assert unquote(quoted) == name
    assert not set(quoted) & set("/#?& |<>"), quoted


def test_a_workspace_is_the_query_the_ui_reads_after_the_route() -> None:
    assert model_url(UI, "m", "team-a") == f"{UI}/#/models/m?workspace=team-a"
    assert (
        model_version_url(UI, "m", "2", "team-a") == f"{UI}/#/models/m/versions/2?workspace=team-a"
    )


# --------------------------------------------------------------------------- config


def test_ui_url_and_workspace_are_off_by_default() -> None:
    config = load_config(None, {})
    assert config.mlflow.ui_url is None
    assert config.mlflow.workspace is None
    assert config.mlflow.payload_context == PayloadContext()


def test_ui_url_is_kept_without_its_trailing_slash(tmp_path: Path) -> None:
    config = load(tmp_path, '[mlflow]\nui_url = "https://example.com/mlflow/"\n')
    assert config.mlflow.ui_url == "https://example.com/mlflow"
    env = {"WATCHER_MLFLOW__UI_URL": "http://127.0.0.1:5000"}
    assert load_config(None, env).mlflow.ui_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "value",
    [
        "mlflow.example.com",
        "ftp://mlflow.example.com",
        "https://",
        "https://mlflow.example.com/#/models",
        "https://mlflow.example.com/?o=1",
        "https://mlflow.example.com:99999",
        "https://mlflow.example.com/a|b",
        "https://mlflow.example.com/a b",
        "",
        "42",
    ],
)
def test_a_bad_ui_url_names_key_value_and_what_was_expected(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, f"[mlflow]\nui_url = {json.dumps(value)}\n")
    assert problem.startswith(f"mlflow.ui_url: got {value!r}, expected "), problem
    assert "http:// or https://" in problem
    assert "no user:password@, ?query or #fragment" in problem


def test_a_ui_url_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path, '[mlflow]\nui_url = "https://alice:hunter2@mlflow.example.com"\n'
    )
    assert problem.startswith("mlflow.ui_url: got "), problem
    assert "user:password@" in problem
    assert "hunter2" not in problem
    assert "alice" not in problem


def test_workspace_from_the_key_or_from_mlflows_variable(tmp_path: Path) -> None:
    assert load(tmp_path, '[mlflow]\nworkspace = "team-a"\n').mlflow.workspace == "team-a"
    assert load_config(None, {"MLFLOW_WORKSPACE": " team-b "}).mlflow.workspace == "team-b"
    same = load(tmp_path, '[mlflow]\nworkspace = "team-a"\n', {"MLFLOW_WORKSPACE": "team-a"})
    assert same.mlflow.payload_context == PayloadContext(workspace="team-a")


@pytest.mark.parametrize("value", ["Team-A", "a", "-team", "team-", "team_a", "x" * 64, ""])
def test_a_bad_workspace_names_key_value_and_mlflows_rule(tmp_path: Path, value: str) -> None:
    problem = only_problem(tmp_path, f"[mlflow]\nworkspace = {json.dumps(value)}\n")
    assert problem.startswith(f"mlflow.workspace: got {value!r}, expected "), problem
    assert "MLflow workspace name" in problem
    assert "2 to 63 lower-case letters, digits and hyphens" in problem


def test_a_bad_mlflow_workspace_variable_is_named_as_such() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"MLFLOW_WORKSPACE": "Team A"})
    (problem,) = info.value.problems
    assert problem.startswith("MLFLOW_WORKSPACE: got 'Team A', expected an MLflow workspace")


def test_a_workspace_key_that_contradicts_mlflow_workspace_is_refused(tmp_path: Path) -> None:
    text = '[mlflow]\nworkspace = "team-a"\n'
    problem = only_problem(tmp_path, text, {"MLFLOW_WORKSPACE": "team-b"})
    assert problem == (
        "mlflow.workspace: got 'team-a', expected the workspace MLFLOW_WORKSPACE names "
        "('team-b'), or MLFLOW_WORKSPACE unset"
    )


# --------------------------------------------------------------------------- payload shapes


def test_the_watcher_format_links_the_version_and_its_model() -> None:
    payload = body("watcher", EventType.MODEL_VERSION_CREATED, LINKED)
    assert payload["model_url"] == f"{UI}/#/models/fraud-model"
    assert payload["model_version_url"] == f"{UI}/#/models/fraud-model/versions/3"
    assert payload["experiment_id"] == example_event(EventType.MODEL_VERSION_CREATED).experiment_id
    assert "workspace" not in payload


def test_without_ui_url_there_is_no_link_in_any_format() -> None:
    for fmt in FORMATS:
        if fmt in ("gitlab", "jenkins", "template"):
            continue
        for kind in EventType:
            text = json.dumps(body(fmt, kind, PayloadContext()))
            assert "/#/models/" not in text, (fmt, kind)
            assert "model_url" not in text, (fmt, kind)


@pytest.mark.parametrize(
    ("kind", "links"),
    [
        (EventType.REGISTERED_MODEL_CREATED, {"model_url"}),
        (EventType.REGISTERED_MODEL_RENAMED, {"model_url"}),
        (EventType.REGISTERED_MODEL_DELETED, set()),
        (EventType.MODEL_VERSION_DELETED, {"model_url"}),
        (EventType.MODEL_VERSION_TRANSITIONED_STAGE, {"model_url", "model_version_url"}),
        (EventType.MODEL_VERSION_TAG_DELETED, {"model_url", "model_version_url"}),
        (EventType.MODEL_VERSION_ALIAS_CREATED, {"model_url", "model_version_url"}),
        (EventType.MODEL_VERSION_ALIAS_DELETED, {"model_url", "model_version_url"}),
    ],
)
def test_links_only_to_what_still_exists(kind: EventType, links: set[str]) -> None:
    payload = body("watcher", kind, LINKED)
    assert {k for k in payload if k.endswith("_url")} == links


def test_a_version_whose_run_could_not_be_read_has_no_experiment_id() -> None:
    payload = body("watcher", EventType.MODEL_VERSION_CREATED, LINKED, experiment_id=None)
    assert payload["run_id"]
    assert "experiment_id" not in payload


def test_the_workspace_is_named_and_in_the_links() -> None:
    payload = body("watcher", EventType.MODEL_VERSION_TAG_SET, TEAM)
    assert payload["workspace"] == "team-a"
    assert payload["model_version_url"].endswith("/versions/3?workspace=team-a")


def test_slack_links_the_version_in_the_ui() -> None:
    text = body("slack", EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION, LINKED)["text"]
    link = f"<{UI}/#/models/fraud-model/versions/3|View in MLflow>"
    assert text == f"fraud-model v3: Staging → Production {link}"
    plain = body("slack", EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION, PayloadContext())
    assert plain["text"] == "fraud-model v3: Staging → Production"


def test_slack_links_the_model_when_the_version_is_gone_and_nothing_when_the_model_is() -> None:
    deleted_version = body("slack", EventType.MODEL_VERSION_DELETED, LINKED)["text"]
    assert deleted_version.endswith(f"<{UI}/#/models/fraud-model|View in MLflow>")
    deleted_model = body("slack", EventType.REGISTERED_MODEL_DELETED, LINKED)["text"]
    assert "<" not in deleted_model


def test_slacks_link_keeps_a_name_with_slacks_delimiters_whole() -> None:
    text = body("slack", EventType.MODEL_VERSION_CREATED, LINKED, model_name="a|b>c")["text"]
    link = text[text.index("<http") + 1 : text.rindex(">")]
    url, label = link.split("|")
    assert label == "View in MLflow"
    assert url == f"{UI}/#/models/a%7Cb%3Ec/versions/3"


def test_the_mlflow_formats_data_is_untouched_and_the_context_goes_beside_it() -> None:
    for kind in EventType:
        plain = body("mlflow", kind, PayloadContext())
        context = body("mlflow", kind, TEAM)
        assert context["data"] == plain["data"], kind
        assert set(plain) == {"entity", "action", "timestamp", "data"}, kind
        extra = set(context) - set(plain)
        assert "workspace" in extra, kind
        assert extra <= {"workspace", "model_url", "model_version_url"}, kind
    version = body("mlflow", EventType.MODEL_VERSION_CREATED, TEAM)
    assert version["workspace"] == "team-a"
    assert version["model_version_url"] == f"{UI}/#/models/fraud-model/versions/3?workspace=team-a"
    assert "experiment_id" not in version


def test_github_keeps_ten_keys_and_puts_the_context_in_details() -> None:
    payload = body("github", EventType.MODEL_VERSION_CREATED, TEAM)["client_payload"]
    assert len(payload) <= 10
    details = payload["details"]
    assert details["experiment_id"] == example_event(EventType.MODEL_VERSION_CREATED).experiment_id
    assert details["model_version_url"].startswith(f"{UI}/#/models/fraud-model/versions/3")
    assert details["workspace"] == "team-a"


@pytest.mark.parametrize("fmt", ["gitlab", "jenkins"])
def test_ci_variables_carry_experiment_workspace_and_links(fmt: str) -> None:
    fields = form(fmt, EventType.MODEL_VERSION_ALIAS_CREATED, TEAM)
    prefix = "variables[{}]" if fmt == "gitlab" else "{}"
    experiment = example_event(EventType.MODEL_VERSION_ALIAS_CREATED).experiment_id
    assert fields[prefix.format("EXPERIMENT_ID")] == experiment
    assert fields[prefix.format("WORKSPACE")] == "team-a"
    assert fields[prefix.format("MODEL_URL")] == f"{UI}/#/models/fraud-model?workspace=team-a"
    assert fields[prefix.format("MODEL_VERSION_URL")].endswith("/versions/3?workspace=team-a")
    plain = form(fmt, EventType.MODEL_VERSION_ALIAS_CREATED, PayloadContext())
    assert prefix.format("MODEL_URL") not in plain
    assert prefix.format("WORKSPACE") not in plain


def test_templates_see_the_context_as_variables() -> None:
    template = compile_template(
        '{"link": {{ model_version_url | tojson }}, "experiment": {{ experiment_id | tojson }},'
        ' "workspace": {{ workspace | tojson }}}'
    )
    options = FormatOptions(format="template", template=template, context=TEAM)
    rendered = render(example_event(EventType.MODEL_VERSION_CREATED), "deploy", options)
    assert json.loads(rendered.body) == {
        "link": f"{UI}/#/models/fraud-model/versions/3?workspace=team-a",
        "experiment": example_event(EventType.MODEL_VERSION_CREATED).experiment_id,
        "workspace": "team-a",
    }


def test_template_validation_wants_the_context_guarded_like_other_optional_fields() -> None:
    bare = compile_template('{"link": {{ model_version_url | tojson }}}')
    (problem,) = validate_template(bare, [EventType.MODEL_VERSION_CREATED], "deploy")
    assert "'model_version_url' is undefined" in problem
    assert "without source, run_id, workspace, model_url, model_version_url" in problem
    guarded = compile_template(
        '{"link": {{ model_version_url | default(none) | tojson }},'
        ' "experiment": {{ experiment_id | default(none) | tojson }},'
        ' "workspace": {{ workspace | default(none) | tojson }}}'
    )
    assert validate_template(guarded, list(EventType), "deploy") == []


def test_the_databricks_format_is_unchanged_by_the_context() -> None:
    for kind in EventType:
        assert body("databricks", kind, TEAM) == body("databricks", kind, PayloadContext())
