"""Every validation rule of watcher/config.py, exercised through load_config on real TOML files."""

from __future__ import annotations

import base64
import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers import load_text as load
from tests.helpers import write_config as write
from watcher.config import (
    DEFAULT_TRACKING_URI,
    Config,
    DeliveryConfig,
    RetryPolicy,
    Secret,
    WatchConfig,
    WebhookConfig,
    effective_config,
    load_config,
    redact_uri,
    to_toml,
)
from watcher.config.keys import RETRY_KEYS, SECTIONS, WEBHOOK_KEYS, Key
from watcher.errors import ConfigError
from watcher.model import ALL_EVENTS, SUPPORTED_EVENTS, EventType
from watcher.payloads import example_event

SECRET_VALUE = "s3cr3t-Value-that-must-never-leak"
HOOK = '[[webhooks]]\nname = "deploy"\nurl = "http://receiver.example/hook"\n'


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


def only_problem_about(
    tmp_path: Path,
    text: str,
    start: str,
    *mentions: str,
    env: Mapping[str, str] | None = None,
    hides: str | None = None,
) -> None:
    """The config has one problem: it starts with ``start`` (the key path, often the value),
    mentions each of ``mentions`` and does not show ``hides`` (a secret)."""
    problem = only_problem(tmp_path, text, env)
    assert problem.startswith(start), problem
    for mention in mentions:
        assert mention in problem, problem
    assert hides is None or hides not in problem


def only_problem_with_a_secret(
    tmp_path: Path, extra: str, start: str, *mentions: str, secret: str = SECRET_VALUE
) -> None:
    """The webhook takes ``secret`` from HOOK_SECRET, with ``extra`` keys after it: the config
    has one problem, as ``only_problem_about`` checks, and it never shows the secret."""
    text = f'{HOOK}secret_env = "HOOK_SECRET"\n{extra}'
    only_problem_about(tmp_path, text, start, *mentions, env={"HOOK_SECRET": secret}, hides=secret)


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
    assert config.delivery.retry.max_attempts == 30


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
    only_problem_about(
        tmp_path, f"[watch]\ninterval = {literal}\n", "watch.interval: got ", "duration"
    )


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


# --------------------------------------------------------------------------- unknown keys, types


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
    only_problem_about(tmp_path, text, f"{path}: got {shown}, expected ")


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
    assert hook.events == ALL_EVENTS
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
    only_problem_about(tmp_path, text, "webhooks[1].name: got 'deploy'", "webhooks[0]")


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "file:///etc/passwd", "host/no-scheme", "http://", "http://h:99999/"]
)
def test_non_http_urls_are_rejected(tmp_path: Path, url: str) -> None:
    only_problem_about(
        tmp_path,
        f'[[webhooks]]\nname = "a"\nurl = "{url}"\n',
        f"webhooks[0].url: got {url!r}, expected an http",
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/hook", "https://hooks.example.com/x?a=1"])
def test_http_and_https_urls_are_accepted(tmp_path: Path, url: str) -> None:
    (hook,) = load(tmp_path, f'[[webhooks]]\nname = "a"\nurl = "{url}"\n').webhooks
    assert hook.url == url


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
    # Every change once: the stage-specific transitions would repeat the generic one.
    assert hook.events == SUPPORTED_EVENTS - {
        EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING,
        EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
        EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED,
    }


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
    only_problem_about(
        tmp_path,
        f'{HOOK}secret_env = "HOOK_SECRET"\n',
        "webhooks[0].secret_env: got 'HOOK_SECRET'",
        env=env,
    )


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
    # A short path: messages shorten values past 80 characters, and a tmp_path under a pytest
    # worker's folder (pytest -n) is long enough to be.
    missing = Path("/nonexistent") / "nope.secret"
    only_problem_about(
        tmp_path,
        f'{HOOK}secret_file = "{missing}"\n',
        f"webhooks[0].secret_file: got {str(missing)!r}",
        "readable file",
    )


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_secret_file_is_rejected(tmp_path: Path, content: str) -> None:
    secret_path = tmp_path / "empty.secret"
    secret_path.write_text(content)
    only_problem_about(
        tmp_path, f'{HOOK}secret_file = "{secret_path}"\n', "webhooks[0].secret_file:", "non-empty"
    )


def test_secret_env_and_secret_file_together_are_rejected(tmp_path: Path) -> None:
    secret_path = tmp_path / "hook.secret"
    secret_path.write_text(SECRET_VALUE)
    only_problem_with_a_secret(
        tmp_path, f'secret_file = "{secret_path}"\n', "webhooks[0].secret_file:", "only one"
    )


def test_commands_that_send_nothing_load_without_the_secrets(tmp_path: Path) -> None:
    """status, healthcheck, deliveries...: an operator's shell beside a systemd service has
    neither the secret's variable nor read access to its credential file."""
    text = (
        '[[webhooks]]\nname = "slack"\nurl = "${SLACK_URL}"\nsecret_env = "SLACK_SECRET"\n'
        'signature = "standard"\nheaders = { Authorization = "Bearer ${TOKEN}" }\n'
        f'[[webhooks]]\nname = "ci"\nurl = "http://ci.example/hook"\n'
        f'secret_file = "{tmp_path / "unreadable.secret"}"\n'
    )
    assert len(problems(tmp_path, text)) == 4  # the daemon refuses to start without them
    config = load_config(write(tmp_path, text), {}, credentials=False)
    assert [w.name for w in config.webhooks] == ["slack", "ci"]
    assert all(w.secret is None for w in config.webhooks)
    # Everything else is still checked.
    bad = text.replace('name = "ci"', 'name = "ci"\ntimeout = "soon"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad), {}, credentials=False)
    [problem] = info.value.problems
    assert problem.startswith("webhooks[1].timeout: got 'soon'")


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


def test_env_overrides_lists_as_json(tmp_path: Path) -> None:
    env = {
        "WATCHER_WATCH__MODELS": '["fraud-*", "churn"]',
        "WATCHER_WATCH__EXCLUDE_MODELS": '["fraud-test*"]',
    }
    config = load(tmp_path, '[watch]\nmodels = ["other"]\n', env)
    assert config.watch.models == ("fraud-*", "churn")
    assert config.watch.exclude_models == ("fraud-test*",)


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
    only_problem_about(
        tmp_path,
        "",
        "webhooks[1].url: got 'gopher://x'",
        env={"WATCHER_WEBHOOKS": json.dumps(hooks)},
    )


@pytest.mark.parametrize("name", ["WATCHER_FOO__BAR", "WATCHER_WATCH__NOPE", "WATCHER_WEBHOOKS__0"])
def test_env_var_naming_no_key_is_an_error(tmp_path: Path, name: str) -> None:
    only_problem_about(tmp_path, "", f"{name}:", env={name: "1"})


@pytest.mark.parametrize(
    "name", ["WATCHER_WEBHOOK_SECRET", "WATCHER_CONFIG", "OTHER_WATCH__INTERVAL", "watcher_x__y"]
)
def test_env_vars_that_are_not_overrides_are_ignored(tmp_path: Path, name: str) -> None:
    config = load(tmp_path, "", {name: "whatever"})
    assert config.watch == WatchConfig()


# --------------------------------------------------------------------------- old key names

RENAMED = [
    ("models_interval", "models_scan_interval"),
    ("full_scan_interval", "versions_scan_interval"),
]


def load_warned(tmp_path: Path, text: str, env: Mapping[str, str]) -> tuple[Config, list[str]]:
    warned: list[str] = []
    return load_config(write(tmp_path, text), env, warn=warned.append), warned


@pytest.mark.parametrize(("old", "new"), RENAMED)
def test_an_old_scan_key_still_works_with_one_warning(tmp_path: Path, old: str, new: str) -> None:
    config, warned = load_warned(tmp_path, f'[watch]\n{old} = "90s"\n', {})
    assert getattr(config.watch, new) == 90.0
    assert warned == [f"[watch] {old} is deprecated; use {new}"]


@pytest.mark.parametrize(("old", "new"), RENAMED)
def test_an_old_scan_key_from_the_environment_works_with_one_warning(
    tmp_path: Path, old: str, new: str
) -> None:
    env = {f"WATCHER_WATCH__{old.upper()}": "auto"}
    config, warned = load_warned(tmp_path, f'[watch]\n{new} = "90s"\n', env)
    assert getattr(config.watch, new) is None  # the environment wins over the file
    assert warned == [
        f"WATCHER_WATCH__{old.upper()} is deprecated; use WATCHER_WATCH__{new.upper()}"
    ]


@pytest.mark.parametrize(("old", "new"), RENAMED)
def test_the_new_scan_key_gives_no_warning(tmp_path: Path, old: str, new: str) -> None:
    config, warned = load_warned(tmp_path, f'[watch]\n{new} = "90s"\n', {})
    assert getattr(config.watch, new) == 90.0
    assert warned == []


@pytest.mark.parametrize(("old", "new"), RENAMED)
def test_an_old_and_a_new_scan_key_together_are_an_error(
    tmp_path: Path, old: str, new: str
) -> None:
    problem = only_problem(tmp_path, f'[watch]\n{old} = "1m"\n{new} = "2m"\n')
    assert problem == f"watch.{old}: and watch.{new} are the same key; set only {new}"


@pytest.mark.parametrize(("old", "new"), RENAMED)
def test_both_names_in_the_environment_are_an_error(tmp_path: Path, old: str, new: str) -> None:
    env = {f"WATCHER_WATCH__{old.upper()}": "1m", f"WATCHER_WATCH__{new.upper()}": "2m"}
    problem = only_problem(tmp_path, "", env)
    assert f"WATCHER_WATCH__{old.upper()}" in problem
    assert f"WATCHER_WATCH__{new.upper()}" in problem


def test_the_old_name_warns_on_stderr_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(tmp_path, '[watch]\nfull_scan_interval = "5m"\n')
    assert capsys.readouterr().err == (
        "mlflow-watcher: warning: [watch] full_scan_interval is deprecated; "
        "use versions_scan_interval\n"
    )


def test_the_effective_config_shows_the_new_scan_names(tmp_path: Path) -> None:
    config, _ = load_warned(tmp_path, '[watch]\nmodels_interval = "1m"\n', {})
    watch = effective_config(config)["watch"]
    assert watch["models_scan_interval"] == "1m"
    assert watch["versions_scan_interval"] == "auto"
    assert "models_interval" not in watch
    assert "full_scan_interval" not in watch


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
    assert parsed["webhooks"][0]["events"] == sorted(e.value for e in ALL_EVENTS)
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


# --------------------------------------------------------------------------- webhook filters


def assert_wanted(hook: WebhookConfig, *kinds: EventType) -> None:
    """The webhook wants the example of each of these event types."""
    for kind in kinds:
        assert hook.wants(example_event(kind)), kind


@pytest.mark.parametrize("fmt", ["watcher", "Databricks", "mlflow", "github", "slack"])
def test_known_formats_are_accepted_in_any_case(tmp_path: Path, fmt: str) -> None:
    (hook,) = load(tmp_path, f'{HOOK}format = "{fmt}"\n').webhooks
    assert hook.format == fmt.lower()


def test_to_stages_are_case_insensitive(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f'{HOOK}to_stages = ["production", "STAGING"]\n').webhooks
    assert hook.to_stages == frozenset({"production", "staging"})


def test_to_stages_filters_stage_events_only(tmp_path: Path) -> None:
    (hook,) = load(
        tmp_path,
        f'{HOOK}to_stages = ["Production"]\n'
        'events = ["*", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",'
        ' "MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED"]\n',
    ).webhooks
    # Staging -> Production, and None -> Staging, Production -> Archived.
    assert hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_STAGE))
    assert hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION))
    assert not hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING))
    assert not hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED))
    # A stage filter does not block events that are not transitions.
    assert_wanted(
        hook,
        EventType.MODEL_VERSION_CREATED,
        EventType.MODEL_VERSION_TAG_SET,
        EventType.MODEL_VERSION_ALIAS_CREATED,
        EventType.REGISTERED_MODEL_CREATED,
    )


def test_aliases_filter_alias_events_only(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f'{HOOK}aliases = ["champ*", "prod"]\n').webhooks
    assert hook.aliases == ("champ*", "prod")
    created = example_event(EventType.MODEL_VERSION_ALIAS_CREATED)
    deleted = example_event(EventType.MODEL_VERSION_ALIAS_DELETED)
    assert created.alias == "champion"
    assert hook.wants(created)
    assert hook.wants(deleted)
    assert not hook.wants(replace(created, alias="challenger"))
    assert not hook.wants(replace(deleted, alias="Champion")), "globs are case-sensitive"
    assert hook.wants(replace(created, alias="prod"))
    # An alias filter does not block events that are not about aliases.
    assert_wanted(
        hook,
        EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        EventType.MODEL_VERSION_CREATED,
        EventType.MODEL_VERSION_TAG_DELETED,
    )


def test_models_globs_filter_every_event(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f'{HOOK}models = ["fraud-*", "churn"]\n').webhooks
    for kind in (
        EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        EventType.MODEL_VERSION_ALIAS_CREATED,
        EventType.REGISTERED_MODEL_CREATED,
    ):
        assert hook.wants(example_event(kind, "fraud-model")), kind
        assert hook.wants(example_event(kind, "churn")), kind
        assert not hook.wants(example_event(kind, "churn-v2")), kind
        assert not hook.wants(example_event(kind, "Fraud-model")), kind


def test_all_filters_must_agree(tmp_path: Path) -> None:
    text = (
        f'{HOOK}events = ["MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_ALIAS_CREATED"]\n'
        'models = ["fraud-*"]\nto_stages = ["Production"]\naliases = ["champion"]\n'
    )
    (hook,) = load(tmp_path, text).webhooks
    assert hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_STAGE))
    assert hook.wants(example_event(EventType.MODEL_VERSION_ALIAS_CREATED))
    assert not hook.wants(example_event(EventType.MODEL_VERSION_TRANSITIONED_STAGE, "churn"))
    assert not hook.wants(example_event(EventType.MODEL_VERSION_TAG_SET)), "not subscribed"


def test_no_filters_want_every_example(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, HOOK).webhooks
    assert (hook.to_stages, hook.aliases, hook.models) == (None, None, ("*",))
    assert all(hook.wants(example_event(kind, "any-name")) for kind in ALL_EVENTS)


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ('models = [""]', "webhooks[0].models"),
        ("models = 5", "webhooks[0].models"),
        ("aliases = 5", "webhooks[0].aliases"),
        ('aliases = [""]', "webhooks[0].aliases"),
        ("to_stages = []", "webhooks[0].to_stages"),
    ],
)
def test_bad_filter_values_are_rejected(tmp_path: Path, line: str, path: str) -> None:
    assert only_problem(tmp_path, f"{HOOK}{line}\n").startswith(f"{path}: got ")


def test_filters_show_in_the_effective_config(tmp_path: Path) -> None:
    text = f'{HOOK}models = ["fraud-*"]\nto_stages = ["Production"]\naliases = ["champion"]\n'
    effective = effective_config(load(tmp_path, text))["webhooks"][0]
    assert effective["models"] == ["fraud-*"]
    assert effective["to_stages"] == ["production"]
    assert effective["aliases"] == ["champion"]


# --------------------------------------------------------------------------- headers


def test_header_values_expand_env_references(tmp_path: Path) -> None:
    text = f'{HOOK}headers = {{ Authorization = "Bearer ${{API_TOKEN}}", X-Team = "risk" }}\n'
    (hook,) = load(tmp_path, text, {"API_TOKEN": SECRET_VALUE}).webhooks
    assert [(name, value.reveal()) for name, value in hook.headers] == [
        ("Authorization", f"Bearer {SECRET_VALUE}"),
        ("X-Team", "risk"),
    ]


def test_a_header_with_a_missing_variable_is_rejected(tmp_path: Path) -> None:
    text = f'{HOOK}headers = {{ Authorization = "Bearer ${{API_TOKEN}}", X-Team = "risk" }}\n'
    problem = only_problem(tmp_path, text)
    assert problem.startswith("webhooks[0].headers.Authorization: got 'Bearer ${API_TOKEN}'")
    assert "API_TOKEN" in problem.split("expected", 1)[1]


def test_headers_must_be_a_table_of_strings(tmp_path: Path) -> None:
    assert only_problem(tmp_path, f"{HOOK}headers = {{ X-Retries = 3 }}\n").startswith(
        "webhooks[0].headers: got "
    )
    assert only_problem(tmp_path, f'{HOOK}headers = {{ "Bad Name" = "x" }}\n').startswith(
        "webhooks[0].headers: got "
    )


def test_header_values_never_show(tmp_path: Path) -> None:
    text = f'{HOOK}headers = {{ Authorization = "Bearer ${{API_TOKEN}}" }}\n'
    config = load(tmp_path, text, {"API_TOKEN": SECRET_VALUE})
    effective = effective_config(config)
    rendered = to_toml(effective)
    for shown in (repr(config), str(config), repr(config.webhooks[0]), json.dumps(effective)):
        assert SECRET_VALUE not in shown
    assert SECRET_VALUE not in rendered
    assert effective["webhooks"][0]["headers"] == ["Authorization"]


# --------------------------------------------------------------------------- templates

TEMPLATE_HOOK = f'{HOOK}format = "template"\n'
GOOD_TEMPLATE = '{"model": {{ model_name | tojson }}, "event": {{ event.event | tojson }}}'


def test_inline_template(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f"{TEMPLATE_HOOK}template = '{GOOD_TEMPLATE}'\n").webhooks
    assert hook.format == "template"
    assert hook.template == GOOD_TEMPLATE


def test_template_file_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "conf"
    (config_dir / "templates").mkdir(parents=True)
    (config_dir / "templates" / "body.j2").write_text(GOOD_TEMPLATE, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (hook,) = load(config_dir, f'{TEMPLATE_HOOK}template_file = "templates/body.j2"\n').webhooks
    assert hook.template == GOOD_TEMPLATE


def test_template_and_template_file_together_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "body.j2").write_text(GOOD_TEMPLATE, encoding="utf-8")
    text = f"{TEMPLATE_HOOK}template = '{GOOD_TEMPLATE}'\ntemplate_file = \"body.j2\"\n"
    only_problem_about(tmp_path, text, "webhooks[0].template_file:", "only one")


@pytest.mark.parametrize("fmt", [None, "watcher", "slack"])
def test_a_template_with_another_format_is_rejected(tmp_path: Path, fmt: str | None) -> None:
    line = f'format = "{fmt}"\n' if fmt else ""
    only_problem_about(
        tmp_path, f"{HOOK}{line}template = '{GOOD_TEMPLATE}'\n", "webhooks[0].format:", '"template"'
    )


def test_a_template_syntax_error_names_the_key_and_line(tmp_path: Path) -> None:
    text = f"{TEMPLATE_HOOK}template = '''\n{{\n  \"model\": {{{{ model_name | tojson }}\n}}'''\n"
    only_problem_about(tmp_path, text, "webhooks[0].template: webhook 'deploy': line 2: ")


def test_a_template_file_syntax_error_names_the_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "body.j2").write_text('{\n"a": 1,\n"b": {% if %}\n}', encoding="utf-8")
    only_problem_about(
        tmp_path,
        f'{TEMPLATE_HOOK}template_file = "body.j2"\n',
        "webhooks[0].template: webhook 'deploy': line 3: ",
    )


def test_an_undefined_variable_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    text = f"{TEMPLATE_HOOK}template = '''{{\n\"a\": {{{{ no_such_field | tojson }}}}\n}}'''\n"
    only_problem_about(
        tmp_path, text, "webhooks[0].template: webhook 'deploy': line 2: ", "no_such_field"
    )


def test_a_text_template_with_a_text_content_type_is_fine(tmp_path: Path) -> None:
    text = (
        f"{TEMPLATE_HOOK}template = 'model {{{{ model_name }}}}: {{{{ event.event }}}}'\n"
        'content_type = "text/plain; charset=utf-8"\n'
    )
    (hook,) = load(tmp_path, text).webhooks
    assert hook.content_type == "text/plain; charset=utf-8"
    assert effective_config(load(tmp_path, text))["webhooks"][0]["content_type"] == (
        "text/plain; charset=utf-8"
    )


def test_templates_are_checked_only_against_subscribed_events(tmp_path: Path) -> None:
    # to_stage exists only on stage events: fine when only those are subscribed.
    template = '{"to": {{ to_stage | tojson }}}'
    stage = f"{TEMPLATE_HOOK}template = '{template}'\n"
    load(tmp_path, stage + 'events = ["MODEL_VERSION_TRANSITIONED_STAGE"]\n')
    only_problem_about(
        tmp_path,
        stage + 'events = ["MODEL_VERSION_CREATED"]\n',
        "webhooks[0].template:",
        "to_stage",
    )


# --------------------------------------------------------------------------- signature schemes

GOOD_WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_standard_signature_with_a_plain_secret_is_rejected(tmp_path: Path) -> None:
    only_problem_with_a_secret(
        tmp_path, 'signature = "standard"\n', "webhooks[0].secret:", "whsec_"
    )


def test_standard_signature_with_a_short_whsec_key_is_rejected(tmp_path: Path) -> None:
    short = "whsec_" + base64.b64encode(b"k" * 8).decode()
    only_problem_with_a_secret(
        tmp_path, 'signature = "standard"\n', "webhooks[0].secret:", secret=short
    )


def test_standard_signature_with_a_whsec_key_is_fine(tmp_path: Path) -> None:
    text = f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "standard"\n'
    (hook,) = load(tmp_path, text, {"HOOK_SECRET": GOOD_WHSEC}).webhooks
    assert hook.signature == "standard"
    assert hook.secret is not None
    assert hook.secret.reveal() == GOOD_WHSEC


@pytest.mark.parametrize("scheme", ["databricks", "github", "mlflow"])
def test_body_and_mlflow_schemes_take_any_secret(tmp_path: Path, scheme: str) -> None:
    text = f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "{scheme}"\n'
    (hook,) = load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE}).webhooks
    assert hook.signature == scheme


@pytest.mark.parametrize("scheme", ["standard", "databricks", "github"])
def test_signing_schemes_need_a_secret(tmp_path: Path, scheme: str) -> None:
    only_problem_about(
        tmp_path, f'{HOOK}signature = "{scheme}"\n', f"webhooks[0].signature: got '{scheme}'"
    )


def test_previous_secrets_with_standard(tmp_path: Path) -> None:
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    text = (
        f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "standard"\n'
        'previous_secrets_env = ["OLD_SECRET"]\n'
    )
    config = load(tmp_path, text, {"HOOK_SECRET": GOOD_WHSEC, "OLD_SECRET": old})
    (hook,) = config.webhooks
    assert [s.reveal() for s in hook.previous_secrets] == [old]
    effective = effective_config(config)
    assert effective["webhooks"][0]["previous_secrets"] == ["<redacted, from env:OLD_SECRET>"]
    assert old not in to_toml(effective) + repr(config)


def test_previous_secrets_env_with_a_missing_variable_is_rejected(tmp_path: Path) -> None:
    text = (
        f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "standard"\n'
        'previous_secrets_env = ["OLD_SECRET"]\n'
    )
    only_problem_about(
        tmp_path,
        text,
        "webhooks[0].previous_secrets_env[0]: got 'OLD_SECRET'",
        env={"HOOK_SECRET": GOOD_WHSEC},
    )


@pytest.mark.parametrize("scheme", ["mlflow", "github", "databricks"])
def test_previous_secrets_env_without_standard_is_rejected(tmp_path: Path, scheme: str) -> None:
    text = (
        f'{HOOK}secret_env = "HOOK_SECRET"\nsignature = "{scheme}"\n'
        'previous_secrets_env = ["OLD_SECRET"]\n'
    )
    env = {"HOOK_SECRET": SECRET_VALUE, "OLD_SECRET": "old-" + SECRET_VALUE}
    only_problem_about(
        tmp_path, text, "webhooks[0].previous_secrets_env:", "standard", env=env, hides=SECRET_VALUE
    )


# --------------------------------------------------------------------------- basic auth, tokens


def test_username_with_a_password_from_env(tmp_path: Path) -> None:
    text = f'{HOOK}username = "ci-bot"\npassword_env = "HOOK_PASSWORD"\n'
    config = load(tmp_path, text, {"HOOK_PASSWORD": SECRET_VALUE})
    (hook,) = config.webhooks
    assert hook.username == "ci-bot"
    assert hook.password is not None
    assert hook.password.reveal() == SECRET_VALUE
    effective = effective_config(config)
    assert effective["webhooks"][0]["username"] == "ci-bot"
    assert SECRET_VALUE not in repr(config) + to_toml(effective)


def test_username_with_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET_VALUE + "\n")
    text = f'{HOOK}username = "ci-bot"\npassword_file = "{tmp_path / "pw"}"\n'
    (hook,) = load(tmp_path, text).webhooks
    assert hook.password is not None
    assert hook.password.reveal() == SECRET_VALUE


def test_password_without_a_username_is_rejected(tmp_path: Path) -> None:
    text = f'{HOOK}password_env = "HOOK_PASSWORD"\n'
    only_problem_about(
        tmp_path,
        text,
        "webhooks[0].username:",
        env={"HOOK_PASSWORD": SECRET_VALUE},
        hides=SECRET_VALUE,
    )


@pytest.mark.parametrize("fmt", ["gitlab", "jenkins"])
def test_token_formats_default_to_no_signature_even_with_a_secret(tmp_path: Path, fmt: str) -> None:
    text = f'{HOOK}format = "{fmt}"\nsecret_env = "HOOK_SECRET"\n'
    (hook,) = load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE}).webhooks
    assert hook.signature == "none"
    assert hook.secret is not None


def test_a_token_format_may_still_ask_for_a_signature(tmp_path: Path) -> None:
    text = f'{HOOK}format = "jenkins"\nsecret_env = "HOOK_SECRET"\nsignature = "github"\n'
    (hook,) = load(tmp_path, text, {"HOOK_SECRET": SECRET_VALUE}).webhooks
    assert hook.signature == "github"


def test_gitlab_ref_defaults_to_main_and_shows_in_the_effective_config(tmp_path: Path) -> None:
    config = load(tmp_path, f'{HOOK}format = "gitlab"\n')
    assert config.webhooks[0].ref == "main"
    assert effective_config(config)["webhooks"][0]["ref"] == "main"
    config = load(tmp_path, f'{HOOK}format = "gitlab"\nref = "release/1.x"\n')
    assert config.webhooks[0].ref == "release/1.x"


# --------------------------------------------------------------------------- github event_type


def test_event_type_of_100_characters_is_accepted(tmp_path: Path) -> None:
    value = "d" * 100
    (hook,) = load(tmp_path, f'{HOOK}format = "github"\nevent_type = "{value}"\n').webhooks
    assert hook.event_type == value


@pytest.mark.parametrize("value", ['"' + "d" * 101 + '"', '""', "5"])
def test_event_type_outside_githubs_limit_is_rejected(tmp_path: Path, value: str) -> None:
    only_problem_about(
        tmp_path,
        f'{HOOK}format = "github"\nevent_type = {value}\n',
        "webhooks[0].event_type: got ",
        "100",
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[watch]\nmodels = []\n", "watch.models"),
        (f"{HOOK}models = []\n", "webhooks[0].models"),
        (f"{HOOK}aliases = []\n", "webhooks[0].aliases"),
    ],
)
def test_an_empty_glob_list_would_match_nothing_so_it_is_an_error(
    tmp_path: Path, text: str, key: str
) -> None:
    assert only_problem(tmp_path, text).startswith(f"{key}: got []")


def test_exclude_models_may_be_empty(tmp_path: Path) -> None:
    assert load(tmp_path, "[watch]\nexclude_models = []\n").watch.exclude_models == ()


def test_a_header_value_with_a_line_break_is_refused(tmp_path: Path) -> None:
    raw = only_problem(tmp_path, f'{HOOK}headers = {{ X-A = "a\\r\\nX-Evil: 1" }}\n')
    assert raw.startswith("webhooks[0].headers:")
    expanded = only_problem(
        tmp_path, f'{HOOK}headers = {{ X-A = "${{VALUE}}" }}\n', {"VALUE": "a\nX-Evil: 1"}
    )
    assert expanded == "webhooks[0].headers.X-A: expands to a value with a line break"
    assert "X-Evil" not in expanded


def test_old_standard_keys_must_be_whsec_keys_too(tmp_path: Path) -> None:
    good = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    text = f'{HOOK}signature = "standard"\nsecret_env = "NEW"\nprevious_secrets_env = ["OLD"]\n'
    problem = only_problem(tmp_path, text, {"NEW": good, "OLD": "plain-old-secret"})
    assert problem.startswith("webhooks[0].previous_secrets_env[0]: is not a usable key")
    assert "plain-old-secret" not in problem
    (hook,) = load(tmp_path, text, {"NEW": good, "OLD": good}).webhooks
    assert len(hook.previous_secrets) == 1


def test_a_url_from_the_environment_is_a_secret(tmp_path: Path) -> None:
    slack = "https://hooks.slack.example/services/T000/B000/XXXXSECRETXXXX"
    text = '[[webhooks]]\nname = "slack"\nurl = "${SLACK_URL}"\nformat = "slack"\n'
    config = load(tmp_path, text, {"SLACK_URL": slack})
    (hook,) = config.webhooks
    assert hook.url == slack
    assert hook.display_url == "https://hooks.slack.example/<redacted>"
    shown = repr(config) + to_toml(effective_config(config))
    assert "XXXXSECRETXXXX" not in shown
    missing = only_problem(tmp_path, text, {})
    assert missing.startswith("webhooks[0].url: got '${SLACK_URL}'")
    bad = only_problem(tmp_path, text, {"SLACK_URL": "not a url"})
    assert bad == "webhooks[0].url: ${SLACK_URL} does not expand to an http(s) URL"


# --------------------------------------------------------------------------- one problem each

REJECTED = [
    pytest.param(
        '[mlflow]\ntracking_uri = "http://"\n',
        "mlflow.tracking_uri:",
        (),
        None,
        id="http_tracking_uri_without_a_host_is_rejected",
    ),
    pytest.param(
        '[delivery]\ninitial_delay = "1m"\nmax_delay = "10s"\n',
        "delivery.max_delay:",
        ("initial_delay",),
        None,
        id="max_delay_below_initial_delay_is_rejected",
    ),
    pytest.param(
        "[mlfow]\ntracking_uri = 'x'\n",
        "mlfow:",
        ("unknown section",),
        None,
        id="unknown_section_is_rejected",
    ),
    pytest.param(
        "[watch]\nintervall = 5\n",
        "watch.intervall:",
        ("unknown key",),
        None,
        id="unknown_key_is_rejected",
    ),
    pytest.param(
        f'{HOOK}events = ["MODEL_VERSION_EXPLODED"]\n',
        "webhooks[0].events:",
        ("MODEL_VERSION_EXPLODED",),
        None,
        id="unknown_event_name_is_rejected",
    ),
    pytest.param(
        f'{HOOK}signature = "mlflow"\n',
        "webhooks[0].signature: got 'mlflow'",
        ("secret",),
        None,
        id="mlflow_signature_without_a_secret_is_rejected",
    ),
    pytest.param(
        f'{HOOK}signature = "md5"\n',
        "webhooks[0].signature: got 'md5'",
        (),
        None,
        id="unknown_signature_scheme_is_rejected",
    ),
    pytest.param(
        "",
        "watch.interval: got 'soon'",
        (),
        {"WATCHER_WATCH__INTERVAL": "soon"},
        id="env_override_values_are_validated",
    ),
    pytest.param(
        "",
        "WATCHER_WATCH__MODELS: got 'fraud-*'",
        ("JSON",),
        {"WATCHER_WATCH__MODELS": "fraud-*"},
        id="env_list_that_is_not_json_is_rejected",
    ),
    pytest.param(
        "",
        "WATCHER_WEBHOOKS:",
        ("JSON",),
        {"WATCHER_WEBHOOKS": "[{name: x}]"},
        id="env_webhooks_that_are_not_json_are_rejected",
    ),
    pytest.param(
        f'{HOOK}format = "xml"\n',
        "webhooks[0].format: got 'xml', expected one of ",
        ('"template"',),
        None,
        id="unknown_format_is_rejected",
    ),
    pytest.param(
        f'{HOOK}to_stages = ["Production", "Prod"]\n',
        'webhooks[0].to_stages: got ["Production", "Prod"], expected ',
        ('"Staging"',),
        None,
        id="to_stages_with_a_bad_stage_is_rejected",
    ),
    pytest.param(
        f'{TEMPLATE_HOOK}template_file = "nope.j2"\n',
        "webhooks[0].template_file: got 'nope.j2'",
        ("readable file",),
        None,
        id="a_missing_template_file_is_rejected",
    ),
    pytest.param(
        TEMPLATE_HOOK,
        "webhooks[0].template:",
        ("template_file",),
        None,
        id="template_format_without_a_template_is_rejected",
    ),
    pytest.param(
        f"{TEMPLATE_HOOK}template = 'model {{{{ model_name }}}}'\n",
        "webhooks[0].template:",
        ("JSON",),
        None,
        id="a_template_that_is_not_json_is_rejected_by_default",
    ),
    pytest.param(
        f'{HOOK}username = "ci-bot"\n',
        "webhooks[0].username:",
        ("password_env",),
        None,
        id="username_without_a_password_is_rejected",
    ),
    pytest.param(
        f'{HOOK}username = "u"\npassword_env = "HOOK_PASSWORD"\n',
        "webhooks[0].password_env: got 'HOOK_PASSWORD'",
        (),
        None,
        id="password_env_with_a_missing_variable_is_rejected",
    ),
]
"""(config, the problem's start: its key path and often the value, what it must mention, env)."""


@pytest.mark.parametrize(("text", "start", "mentions", "env"), REJECTED)
def test_a_bad_config_is_one_problem_naming_its_key(
    tmp_path: Path, text: str, start: str, mentions: tuple[str, ...], env: dict[str, str] | None
) -> None:
    only_problem_about(tmp_path, text, start, *mentions, env=env)


# --------------------------------------------------------------------------- the key tables


@pytest.mark.parametrize(
    ("keys", "owner"),
    [
        *(
            (SECTIONS[name], type(getattr(Config(), name)))
            for name in SECTIONS
            if name != "delivery"
        ),
        ({k: v for k, v in SECTIONS["delivery"].items() if k not in RETRY_KEYS}, DeliveryConfig),
        (RETRY_KEYS, RetryPolicy),
        (WEBHOOK_KEYS, WebhookConfig),
    ],
)
def test_every_key_that_fills_a_field_names_one(keys: Mapping[str, Key], owner: type) -> None:
    """A key's type and default are its field's: a key without a field would have neither."""
    fields = {f.name for f in dataclasses.fields(owner)}
    plain = {name for name, key in keys.items() if key.parse is not None and not key.builds}
    shown = {name for name, key in keys.items() if key.show is not None and not key.shown_from}
    assert plain <= fields
    assert shown <= fields


def test_every_section_field_is_read_and_shown() -> None:
    """A new field without a key would be neither settable nor shown by check-config."""
    for name, keys in SECTIONS.items():
        section = getattr(Config(), name)
        fields = {f.name for f in dataclasses.fields(section)} - {"retry"}
        assert fields <= set(keys), name
        assert set(effective_config(Config())[name]) <= set(keys), name


def test_a_rename_is_for_the_webhooks_of_either_name(tmp_path: Path) -> None:
    """It ends the old name's story (as a deletion of it did) and starts the new one's."""
    rename = example_event(EventType.REGISTERED_MODEL_RENAMED)  # fraud-model-v1 -> fraud-model
    config = load(
        tmp_path,
        f'{HOOK}models = ["fraud-model-v*"]\n'
        '[[webhooks]]\nname = "new"\nurl = "http://receiver.example/hook"\n'
        'models = ["fraud-model"]\n'
        '[[webhooks]]\nname = "other"\nurl = "http://receiver.example/hook"\n'
        'models = ["churn*"]\n'
        '[[webhooks]]\nname = "staged"\nurl = "http://receiver.example/hook"\n'
        'to_stages = ["Production"]\naliases = ["champion"]\n',
    )
    assert [hook.wants(rename) for hook in config.webhooks] == [True, True, False, True]


def test_every_event_subscribes_to_renames(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, f'{HOOK}events = ["*"]\n').webhooks
    assert EventType.REGISTERED_MODEL_RENAMED in hook.events
    (deletions,) = load(tmp_path, f'{HOOK}events = ["REGISTERED_MODEL_DELETED"]\n').webhooks
    assert EventType.REGISTERED_MODEL_RENAMED not in deletions.events
