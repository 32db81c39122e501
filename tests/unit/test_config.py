"""Every validation rule of watcher/config.py, exercised through load_config on real TOML files."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from watcher.config import (
    DEFAULT_TRACKING_URI,
    Config,
    Secret,
    WatchConfig,
    effective_config,
    load_config,
    redact_uri,
    to_toml,
)
from watcher.errors import ConfigError
from watcher.model import SUPPORTED_EVENTS, EventType
from watcher.payloads import example_event

SECRET_VALUE = "s3cr3t-Value-that-must-never-leak"
HOOK = '[[webhooks]]\nname = "deploy"\nurl = "http://receiver.example/hook"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), {} if env is None else env)


def problems(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    assert info.value.exit_code == 2
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def only_problem(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- defaults


def test_no_file_gives_the_embedded_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.source == "embedded defaults"
    assert config.mlflow.tracking_uri == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    assert config.mlflow.effective_registry_uri == DEFAULT_TRACKING_URI
    assert config.watch.interval == 30.0
    assert config.watch.models == ("*",)
    assert config.webhooks == ()
    assert config.delivery.max_attempts == 30


def test_empty_file_gives_the_defaults_with_the_file_as_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path, {})
    assert config.source == str(path)
    assert config.watch == WatchConfig()


def test_mlflow_tracking_uri_env_is_the_default_tracking_uri() -> None:
    config = load_config(None, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert config.mlflow.tracking_uri == "http://mlflow:5000"
    assert config.mlflow.effective_registry_uri == "http://mlflow:5000"


def test_mlflow_registry_uri_env_is_used_when_the_file_has_none() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://t:5000", "MLFLOW_REGISTRY_URI": "http://r:5000"}
    config = load_config(None, env)
    assert config.mlflow.effective_registry_uri == "http://r:5000"


def test_tracking_uri_from_the_file_is_used(tmp_path: Path) -> None:
    config = load(tmp_path, '[mlflow]\ntracking_uri = "http://file-mlflow:5000"\n')
    assert config.mlflow.tracking_uri == "http://file-mlflow:5000"


def test_http_tracking_uri_without_a_host_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[mlflow]\ntracking_uri = "http://"\n')
    assert problem.startswith("mlflow.tracking_uri:")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("literal", "seconds"),
    [
        ('"500ms"', 0.5),
        ('"30s"', 30.0),
        ('"5m"', 300.0),
        ('"1h"', 3600.0),
        ('"1h30m"', 5400.0),
        ('"1d"', 86400.0),
        ('"90"', 90.0),
        ("45", 45.0),
        ("2.5", 2.5),
    ],
)
def test_durations_are_parsed(tmp_path: Path, literal: str, seconds: float) -> None:
    config = load(tmp_path, f"[watch]\ninterval = {literal}\n")
    assert config.watch.interval == pytest.approx(seconds)


@pytest.mark.parametrize(
    "literal",
    ['"5x"', "-1", "0", "0.0", "true", '"1h 30m"', '"-5s"', '"nan"', '"inf"', '""', "[30]"],
)
def test_bad_durations_are_rejected_with_path_and_value(tmp_path: Path, literal: str) -> None:
    problem = only_problem(tmp_path, f"[watch]\ninterval = {literal}\n")
    assert problem.startswith("watch.interval: got ")
    assert "duration" in problem


def test_every_duration_key_uses_the_duration_parser(tmp_path: Path) -> None:
    text = (
        '[mlflow]\ntimeout = "5x"\n'
        '[delivery]\ninitial_delay = "5x"\nmax_delay = "5x"\nmax_age = "5x"\n'
        f'{HOOK}timeout = "5x"\n'
    )
    found = problems(tmp_path, text)
    paths = sorted(p.split(":", 1)[0] for p in found)
    assert paths == [
        "delivery.initial_delay",
        "delivery.max_age",
        "delivery.max_delay",
        "mlflow.timeout",
        "webhooks[0].timeout",
    ]


def test_max_delay_below_initial_delay_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[delivery]\ninitial_delay = "1m"\nmax_delay = "10s"\n')
    assert problem.startswith("delivery.max_delay:")
    assert "initial_delay" in problem


# --------------------------------------------------------------------------- unknown keys, types


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "[mlfow]\ntracking_uri = 'x'\n")
    assert problem.startswith("mlfow:")
    assert "unknown section" in problem


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "[watch]\nintervall = 5\n")
    assert problem.startswith("watch.intervall:")
    assert "unknown key" in problem


def test_unknown_webhook_key_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, f'{HOOK}secret = "{SECRET_VALUE}"\n')
    assert problem.startswith("webhooks[0].secret:")
    # A secret put straight into the file must not be echoed back in the error.
    assert SECRET_VALUE not in problem


@pytest.mark.parametrize(
    ("text", "path", "shown"),
    [
        ('[mlflow]\npage_size = "many"\n', "mlflow.page_size", "'many'"),
        ("[mlflow]\npage_size = 0\n", "mlflow.page_size", "0"),
        ("[mlflow]\npage_size = 10001\n", "mlflow.page_size", "10001"),
        ("[mlflow]\npage_size = true\n", "mlflow.page_size", "true"),
        ("[mlflow]\npage_size = 10.0\n", "mlflow.page_size", "10.0"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts", "0"),
        ('[log]\nlevel = "loud"\n', "log.level", "'loud'"),
        ('[log]\nformat = "xml"\n', "log.format", "'xml'"),
        ("[state]\npath = 5\n", "state.path", "5"),
        ('[state]\npath = "  "\n', "state.path", "'  '"),
        ("[watch]\nmodels = 5\n", "watch.models", "5"),
        ('[watch]\nmodels = [""]\n', "watch.models", '[""]'),
        ("[watch]\nexclude_models = [1]\n", "watch.exclude_models", "[1]"),
        ("watch = 5\n", "watch", "5"),
        ('[webhooks]\nname = "x"\n', "webhooks", '{"name": "x"}'),
        (
            '[[webhooks]]\nname = "has space"\nurl = "http://h/"\n',
            "webhooks[0].name",
            "'has space'",
        ),
        ('[[webhooks]]\nname = "a"\nurl = 5\n', "webhooks[0].url", "5"),
    ],
)
def test_wrong_types_and_ranges_name_the_key_and_the_value(
    tmp_path: Path, text: str, path: str, shown: str
) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.startswith(f"{path}: got {shown}, expected ")


def test_log_choices_are_case_insensitive(tmp_path: Path) -> None:
    config = load(tmp_path, '[log]\nlevel = "DEBUG"\nformat = "Json"\n')
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_a_single_glob_string_is_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, '[watch]\nmodels = "fraud-*"\n')
    assert config.watch.models == ("fraud-*",)


# --------------------------------------------------------------------------- webhooks


def test_a_minimal_webhook_gets_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, HOOK)
    (hook,) = config.webhooks
    assert hook.name == "deploy"
    assert hook.url == "http://receiver.example/hook"
    assert hook.events == SUPPORTED_EVENTS
    assert hook.secret is None
    assert hook.signature == "none"
    assert hook.timeout == 10.0
    assert config.webhook("deploy") is hook
    assert config.webhook("other") is None


def test_webhook_name_and_url_are_required(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[webhooks]]\nevents = ["*"]\n')
    assert sorted(p.split(":", 1)[0] for p in found) == ["webhooks[0].name", "webhooks[0].url"]
    assert all("missing" in p for p in found)


def test_duplicate_webhook_names_are_rejected(tmp_path: Path) -> None:
    text = HOOK + '[[webhooks]]\nname = "deploy"\nurl = "https://other.example/"\n'
    problem = only_problem(tmp_path, text)
    assert problem.startswith("webhooks[1].name: got 'deploy'")
    assert "webhooks[0]" in problem


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "file:///etc/passwd", "host/no-scheme", "http://", "http://h:99999/"]
)
def test_non_http_urls_are_rejected(tmp_path: Path, url: str) -> None:
    problem = only_problem(tmp_path, f'[[webhooks]]\nname = "a"\nurl = "{url}"\n')
    assert problem.startswith(f"webhooks[0].url: got {url!r}, expected an http")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/hook", "https://hooks.example.com/x?a=1"])
def test_http_and_https_urls_are_accepted(tmp_path: Path, url: str) -> None:
    (hook,) = load(tmp_path, f'[[webhooks]]\nname = "a"\nurl = "{url}"\n').webhooks
    assert hook.url == url


def test_unknown_event_name_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, f'{HOOK}events = ["MODEL_VERSION_EXPLODED"]\n')
    assert problem.startswith("webhooks[0].events:")
    assert "MODEL_VERSION_EXPLODED" in problem


def test_empty_event_list_is_rejected(tmp_path: Path) -> None:
    assert only_problem(tmp_path, f"{HOOK}events = []\n").startswith("webhooks[0].events:")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model_version_alias.created", EventType.MODEL_VERSION_ALIAS_CREATED),
        ("model_version.created", EventType.MODEL_VERSION_CREATED),
        ("registered_model.created", EventType.REGISTERED_MODEL_CREATED),
        ("MODEL_VERSION_DELETED", EventType.MODEL_VERSION_DELETED),
        ("model_version_tag_set", EventType.MODEL_VERSION_TAG_SET),
    ],
)
def test_native_and_canonical_names_in_any_case(
    tmp_path: Path, name: str, expected: EventType
) -> None:
    (hook,) = load(tmp_path, f'{HOOK}events = ["{name}"]\n').webhooks
    assert hook.events == {expected}


def test_stage_events_are_accepted_in_any_case(tmp_path: Path) -> None:
    text = (
        f'{HOOK}events = ["MODEL_VERSION_TRANSITIONED_STAGE",'
        ' "model_version_transitioned_to_production"]\n'
    )
    (hook,) = load(tmp_path, text).webhooks
    assert hook.events == {
        EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
    }
    assert hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION))
    assert not hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED))


def test_star_subscribes_to_every_supported_event(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f'{HOOK}events = ["*"]\n').webhooks
    assert hook.events == SUPPORTED_EVENTS


# --------------------------------------------------------------------------- secrets


def test_secret_from_env_defaults_to_the_mlflow_signature(tmp_path: Path) -> None:
    config = load(tmp_path, f'{HOOK}secret_env = "HOOK_SECRET"\n', {"HOOK_SECRET": SECRET_VALUE})
    (hook,) = config.webhooks
    assert hook.secret is not None
    assert hook.secret.reveal() == SECRET_VALUE
    assert hook.secret.source == "env:HOOK_SECRET"
    assert hook.signature == "mlflow"


def test_signature_none_with_a_secret_is_allowed(tmp_path: Path) -> None:
    text = f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "none"\n'
    (hook,) = load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE}).webhooks
    assert hook.signature == "none"


@pytest.mark.parametrize("env", [{}, {"HOOK_SECRET": ""}])
def test_missing_or_empty_secret_env_var_is_rejected(tmp_path: Path, env: dict[str, str]) -> None:
    problem = only_problem(tmp_path, f'{HOOK}secret_env = "HOOK_SECRET"\n', env)
    assert problem.startswith("webhooks[0].secret_env: got 'HOOK_SECRET'")


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (f"{SECRET_VALUE}\n", SECRET_VALUE),
        (f"{SECRET_VALUE}\r\n", SECRET_VALUE),
        (SECRET_VALUE, SECRET_VALUE),
        # Only one trailing newline is stripped.
        (f"{SECRET_VALUE}\n\n", f"{SECRET_VALUE}\n"),
    ],
)
def test_secret_file_strips_one_trailing_newline(tmp_path: Path, content: str, secret: str) -> None:
    secret_path = tmp_path / "hook.secret"
    secret_path.write_bytes(content.encode())
    (hook,) = load(tmp_path, f'{HOOK}secret_file = "{secret_path}"\n').webhooks
    assert hook.secret is not None
    assert hook.secret.reveal() == secret
    assert hook.secret.source == f"file:{secret_path}"
    assert hook.signature == "mlflow"


def test_secret_file_expands_env_references(tmp_path: Path) -> None:
    (tmp_path / "hook.secret").write_text(SECRET_VALUE + "\n")
    text = f'{HOOK}secret_file = "${{SECRETS_DIR}}/hook.secret"\n'
    (hook,) = load(tmp_path, text, {"SECRETS_DIR": str(tmp_path)}).webhooks
    assert hook.secret is not None
    assert hook.secret.reveal() == SECRET_VALUE


def test_secret_file_with_an_unset_variable_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, f'{HOOK}secret_file = "${{SECRETS_DIR}}/hook.secret"\n')
    assert problem.startswith("webhooks[0].secret_file: got '${SECRETS_DIR}/hook.secret'")
    assert "SECRETS_DIR" in problem.split("expected", 1)[1]


def test_missing_secret_file_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "nope.secret"
    problem = only_problem(tmp_path, f'{HOOK}secret_file = "{missing}"\n')
    assert problem.startswith(f"webhooks[0].secret_file: got {str(missing)!r}")
    assert "readable file" in problem


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_secret_file_is_rejected(tmp_path: Path, content: str) -> None:
    secret_path = tmp_path / "empty.secret"
    secret_path.write_text(content)
    problem = only_problem(tmp_path, f'{HOOK}secret_file = "{secret_path}"\n')
    assert problem.startswith("webhooks[0].secret_file:")
    assert "non-empty" in problem


def test_secret_env_and_secret_file_together_are_rejected(tmp_path: Path) -> None:
    secret_path = tmp_path / "hook.secret"
    secret_path.write_text(SECRET_VALUE)
    text = f'{HOOK}secret_env = "HOOK_SECRET"\nsecret_file = "{secret_path}"\n'
    problem = only_problem(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE})
    assert problem.startswith("webhooks[0].secret_file:")
    assert "only one" in problem
    assert SECRET_VALUE not in problem


def test_mlflow_signature_without_a_secret_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, f'{HOOK}signature = "mlflow"\n')
    assert problem.startswith("webhooks[0].signature: got 'mlflow'")
    assert "secret" in problem


def test_unknown_signature_scheme_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, f'{HOOK}signature = "md5"\n')
    assert problem.startswith("webhooks[0].signature: got 'md5'")


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once_with_its_key_path_and_value(tmp_path: Path) -> None:
    text = (
        '[watch]\ninterval = "5x"\nbogus = 1\n'
        "[delivery]\nmax_attempts = 0\n"
        "[nosuch]\na = 1\n"
        '[[webhooks]]\nname = "ok"\nurl = "http://ok.example/"\n'
        '[[webhooks]]\nname = "bad"\nurl = "ftp://bad.example/"\nevents = ["NOPE"]\n'
        'secret_env = "UNSET_SECRET"\n'
    )
    found = problems(tmp_path, text)
    by_path = {p.split(":", 1)[0]: p for p in found}
    assert len(found) == len(by_path) == 7, found
    assert "'5x'" in by_path["watch.interval"]
    assert "unknown key" in by_path["watch.bogus"]
    assert "got 0" in by_path["delivery.max_attempts"]
    assert "unknown section" in by_path["nosuch"]
    assert "'ftp://bad.example/'" in by_path["webhooks[1].url"]
    assert "NOPE" in by_path["webhooks[1].events"]
    assert "'UNSET_SECRET'" in by_path["webhooks[1].secret_env"]


def test_config_error_message_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[watch]\ninterval = "5x"\n[log]\nlevel = "loud"\n')
    assert str(info.value).splitlines() == info.value.problems
    assert len(info.value.problems) == 2


def test_invalid_toml_is_one_clear_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "[watch\ninterval = \n")
    assert "not valid TOML" in problem


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert info.value.problems == [f"config file {str(missing)!r} does not exist"]


def test_config_path_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    assert "is a directory" in info.value.problems[0]


# --------------------------------------------------------------------------- environment


def test_env_overrides_a_scalar_and_wins_over_the_file(tmp_path: Path) -> None:
    text = '[watch]\ninterval = "1m"\n[mlflow]\npage_size = 100\n'
    env = {"WATCHER_WATCH__INTERVAL": "10s", "WATCHER_MLFLOW__PAGE_SIZE": "500"}
    config = load(tmp_path, text, env)
    assert config.watch.interval == 10.0
    assert config.mlflow.page_size == 500


def test_env_override_values_are_validated(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "", {"WATCHER_WATCH__INTERVAL": "soon"})
    assert problem.startswith("watch.interval: got 'soon'")


def test_env_overrides_lists_as_json(tmp_path: Path) -> None:
    env = {
        "WATCHER_WATCH__MODELS": '["fraud-*", "churn"]',
        "WATCHER_WATCH__EXCLUDE_MODELS": '["fraud-test*"]',
    }
    config = load(tmp_path, '[watch]\nmodels = ["other"]\n', env)
    assert config.watch.models == ("fraud-*", "churn")
    assert config.watch.exclude_models == ("fraud-test*",)


def test_env_list_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "", {"WATCHER_WATCH__MODELS": "fraud-*"})
    assert problem.startswith("WATCHER_WATCH__MODELS: got 'fraud-*'")
    assert "JSON" in problem


def test_env_webhooks_as_a_json_list_replace_the_file(tmp_path: Path) -> None:
    hooks = [
        {"name": "ci", "url": "https://ci.example/hook", "events": ["*"]},
        {"name": "slack", "url": "https://slack.example/x", "secret_env": "HOOK_SECRET"},
    ]
    env = {"WATCHER_WEBHOOKS": json.dumps(hooks), "HOOK_SECRET": SECRET_VALUE}
    config = load(tmp_path, HOOK, env)
    assert [w.name for w in config.webhooks] == ["ci", "slack"]
    assert config.webhooks[1].signature == "mlflow"


def test_env_webhooks_are_validated_with_their_index(tmp_path: Path) -> None:
    hooks = [{"name": "ok", "url": "http://ok/"}, {"name": "bad", "url": "gopher://x"}]
    problem = only_problem(tmp_path, "", {"WATCHER_WEBHOOKS": json.dumps(hooks)})
    assert problem.startswith("webhooks[1].url: got 'gopher://x'")


def test_env_webhooks_that_are_not_json_are_rejected(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "", {"WATCHER_WEBHOOKS": "[{name: x}]"})
    assert problem.startswith("WATCHER_WEBHOOKS:")
    assert "JSON" in problem


@pytest.mark.parametrize("name", ["WATCHER_FOO__BAR", "WATCHER_WATCH__NOPE", "WATCHER_WEBHOOKS__0"])
def test_env_var_naming_no_key_is_an_error(tmp_path: Path, name: str) -> None:
    problem = only_problem(tmp_path, "", {name: "1"})
    assert problem.startswith(f"{name}:")


@pytest.mark.parametrize(
    "name", ["WATCHER_WEBHOOK_SECRET", "WATCHER_CONFIG", "OTHER_WATCH__INTERVAL", "watcher_x__y"]
)
def test_env_vars_that_are_not_overrides_are_ignored(tmp_path: Path, name: str) -> None:
    config = load(tmp_path, "", {name: "whatever"})
    assert config.watch == WatchConfig()


# --------------------------------------------------------------------------- display


def _config_with_secret(tmp_path: Path) -> Config:
    text = (
        '[mlflow]\ntracking_uri = "https://bob:hunter2@mlflow.example:5000"\n'
        '[watch]\nmodels = ["fraud-*"]\nexclude_models = ["fraud-test*"]\n'
        '[[webhooks]]\nname = "deploy"\nurl = "https://hooks.example/x"\n'
        'secret_env = "HOOK_SECRET"\nevents = ["*"]\n'
        '[[webhooks]]\nname = "plain"\nurl = "http://alice:pa55word@recv.example:8080/p"\n'
    )
    return load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE})


def test_secret_never_shows_its_value() -> None:
    secret = Secret(SECRET_VALUE, "env:HOOK_SECRET")
    assert SECRET_VALUE not in repr(secret)
    assert SECRET_VALUE not in str(secret)
    assert SECRET_VALUE not in f"{secret}"
    assert "env:HOOK_SECRET" in repr(secret)
    assert secret == Secret(SECRET_VALUE, "file:/elsewhere")
    assert secret != Secret("other", "env:HOOK_SECRET")


def test_secret_is_absent_from_config_repr_and_effective_config(tmp_path: Path) -> None:
    config = _config_with_secret(tmp_path)
    assert config.webhooks[0].secret is not None
    assert config.webhooks[0].secret.reveal() == SECRET_VALUE
    effective = effective_config(config)
    rendered = to_toml(effective)
    for text in (repr(config), str(config), json.dumps(effective), rendered):
        assert SECRET_VALUE not in text
    assert "<redacted, from env:HOOK_SECRET>" in rendered


def test_secret_is_absent_from_config_errors(tmp_path: Path) -> None:
    text = f'{HOOK}secret_env = "HOOK_SECRET"\n[log]\nlevel = "loud"\n'
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE})
    assert SECRET_VALUE not in str(info.value)
    assert SECRET_VALUE not in repr(info.value)


def test_effective_config_redacts_passwords_in_uris(tmp_path: Path) -> None:
    effective = effective_config(_config_with_secret(tmp_path))
    rendered = to_toml(effective)
    assert "hunter2" not in rendered
    assert "pa55word" not in rendered
    assert effective["mlflow"]["tracking_uri"] == "https://bob:***@mlflow.example:5000"
    assert effective["webhooks"][1]["url"] == "http://alice:***@recv.example:8080/p"


def test_effective_config_parses_back_with_tomllib(tmp_path: Path) -> None:
    config = _config_with_secret(tmp_path)
    effective = effective_config(config)
    parsed = tomllib.loads(to_toml(effective))
    assert parsed == effective
    assert parsed["watch"]["interval"] == "30s"
    assert parsed["delivery"]["max_age"] == "1d"
    assert parsed["webhooks"][0]["events"] == sorted(e.value for e in SUPPORTED_EVENTS)
    assert parsed["webhooks"][1]["secret"] == "<none>"


def test_effective_config_durations_load_back_to_the_same_seconds(tmp_path: Path) -> None:
    config = load(tmp_path, '[watch]\ninterval = "1h30m"\n[mlflow]\ntimeout = "500ms"\n')
    effective = effective_config(config)
    again = load_config(
        write(tmp_path, f'[watch]\ninterval = "{effective["watch"]["interval"]}"\n'), {}
    )
    assert again.watch.interval == config.watch.interval == 5400.0
    assert effective["mlflow"]["timeout"] == "500ms"


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("http://user:pw@host:5000/p?q=1", "http://user:***@host:5000/p?q=***"),
        ("https://user:pw@host/", "https://user:***@host/"),
        ("postgresql://u:secretpw@db/mlflow", "postgresql://u:***@db/mlflow"),
        ("http://host:5000", "http://host:5000"),
        ("http://user@host:5000", "http://user@host:5000"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_redact_uri_hides_a_password(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted


def test_watches_matches_globs_and_honours_exclude() -> None:
    watch = WatchConfig(models=("fraud-*", "churn"), exclude_models=("fraud-test*",))
    assert watch.watches("fraud-detector")
    assert watch.watches("churn")
    assert not watch.watches("fraud-test-1")
    assert not watch.watches("churn-v2")
    assert not watch.watches("other")
    assert not watch.watches("Fraud-detector"), "globs are case-sensitive"
    assert WatchConfig().watches("anything at all")


def test_watches_from_a_loaded_config(tmp_path: Path) -> None:
    config = load(tmp_path, '[watch]\nmodels = ["a-*"]\nexclude_models = ["a-b*"]\n')
    assert config.watch.watches("a-x")
    assert not config.watch.watches("a-bc")
