"""Loading: the TOML file, the ``WATCHER_SECTION__KEY`` overrides, the key tables, one Config.

Every problem is collected with its key path (``webhooks[0].url``), the bad value and what was
expected, and reported at once as one :class:`ConfigError`; nothing starts on a bad config.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watcher.config.keys import RETRY_KEYS, SECTIONS, Key, lookup, parse_table
from watcher.config.parsers import Invalid, Problems, format_duration, parse_workspace
from watcher.config.types import (
    CONSOLE_NEEDS_CREDENTIAL,
    DEFAULT_TRACKING_URI,
    Config,
    ConsoleConfig,
    DeliveryConfig,
    HintsConfig,
    LogConfig,
    MlflowConfig,
    RetryPolicy,
    ServerConfig,
    StateConfig,
    WatchConfig,
    redact_uri,
)
from watcher.config.webhooks import parse_webhooks, read_secret
from watcher.errors import ConfigError

DEFAULT_CONFIG_NAME = "watcher.toml"
ENV_PREFIX = "WATCHER_"


def resolve_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $WATCHER_CONFIG, else ./watcher.toml if it exists, else None (defaults)."""
    if explicit:
        return Path(explicit)
    if env.get("WATCHER_CONFIG"):
        return Path(env["WATCHER_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def warn_on_stderr(message: str) -> None:
    print(f"mlflow-watcher: warning: {message}", file=sys.stderr)


def load_config(
    path: Path | None,
    env: Mapping[str, str] | None = None,
    *,
    credentials: bool = True,
    warn: Callable[[str], None] = warn_on_stderr,
) -> Config:
    """Read, override from the environment, validate. Raises ConfigError with every problem.

    ``credentials=False`` is for the commands that read the state file and send nothing
    (status, healthcheck, deliveries...): they work where the daemon's secrets are not set,
    such as an operator's shell beside a systemd service; the webhooks' secrets are then None.
    ``warn`` gets one line per old key name still in use (even when the config is refused).
    """
    env = os.environ if env is None else env
    raw = _read_toml(path) if path is not None else {}
    problems = Problems(credentials)
    from_env = _apply_env_overrides(raw, env, problems)
    base_dir = path.parent if path is not None else Path()
    config = _build(raw, env, problems, base_dir, from_env)
    for warning in problems.warnings:
        warn(warning)
    if problems.items or config is None:
        raise ConfigError(problems.items)
    return replace(config, source=str(path)) if path is not None else config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file {str(path)!r} is a directory"]) from None
    except PermissionError:
        raise ConfigError([f"config file {str(path)!r} is not readable"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {str(path)!r} is not valid TOML: {exc}"]) from None


def _apply_env_overrides(
    raw: dict[str, Any], env: Mapping[str, str], problems: Problems
) -> set[tuple[str, str]]:
    """``WATCHER_SECTION__KEY`` replaces the file's key, under its current or old name.
    Returns the (section, key) pairs the environment set."""
    set_by: dict[tuple[str, str], str] = {}
    for name in sorted(env):
        if name == "WATCHER_WEBHOOKS":
            try:
                raw["webhooks"] = json.loads(env[name])
            except json.JSONDecodeError as exc:
                problems.note(
                    name, f"is not valid JSON ({exc.msg}); expected a JSON list of tables"
                )
            continue
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, given = name[len(ENV_PREFIX) :].lower().partition("__")
        keys = SECTIONS.get(section, {})
        key = lookup(keys, given)
        if key is None:
            problems.note(name, "names no configuration key (expected WATCHER_SECTION__KEY)")
            continue
        if (section, key) in set_by:
            problems.note(name, f"and {set_by[section, key]} set the same key; set only one")
            continue
        set_by[section, key] = name
        if given != key:
            new_name = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            problems.warnings.append(f"{name} is deprecated; use {new_name}")
        value = _env_value(name, env[name], keys[key], problems)
        table = raw.setdefault(section, {})
        if value is not None and isinstance(table, dict):
            table.pop(keys[key].old_name or key, None)
            table[key] = value
    return set(set_by)


def _env_value(name: str, text: str, key: Key, problems: Problems) -> Any:
    """The variable's value, decoded from JSON for a list or a table; None if it is not."""
    if not key.is_collection:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        problems.add(name, text, "a JSON list")
        return None


def _build(
    raw: dict[str, Any],
    env: Mapping[str, str],
    problems: Problems,
    base_dir: Path,
    from_env: set[tuple[str, str]],
) -> Config | None:
    for key in raw:
        if key not in SECTIONS and key != "webhooks":
            problems.note(
                key, f"unknown section; expected one of {', '.join([*SECTIONS, 'webhooks'])}"
            )
    sections: dict[str, dict[str, Any]] = {}
    for section, keys in SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            problems.add(section, table, "a table")
            continue
        sections[section] = parse_table(table, keys, section, problems)
    delivery = _delivery(sections.get("delivery", {}), problems)
    webhooks = parse_webhooks(raw.get("webhooks", []), env, problems, base_dir, delivery)
    server = _server(sections.get("server", {}), env, problems)
    console = _console(sections.get("console", {}), env, problems)
    state = _state(sections.get("state", {}), env, problems, from_env)
    hints = _hints(sections.get("hints", {}), env, problems, server)
    mlflow = _mlflow(sections.get("mlflow", {}), env, problems)
    if problems.items or state is None:
        return None
    return Config(
        mlflow=mlflow,
        watch=WatchConfig(**sections.get("watch", {})),
        state=state,
        log=LogConfig(**sections.get("log", {})),
        delivery=delivery,
        webhooks=webhooks,
        server=server,
        console=console,
        hints=hints,
    )


def _mlflow(values: dict[str, Any], env: Mapping[str, str], problems: Problems) -> MlflowConfig:
    """MLflow's own environment variables stand in for the keys the config leaves out."""
    if "tracking_uri" not in values:
        values["tracking_uri"] = env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if "registry_uri" not in values and env.get("MLFLOW_REGISTRY_URI"):
        values["registry_uri"] = env["MLFLOW_REGISTRY_URI"]
    _workspace(values, env, problems)
    return MlflowConfig(**values)


def _workspace(values: dict[str, Any], env: Mapping[str, str], problems: Problems) -> None:
    """``$MLFLOW_WORKSPACE`` is the workspace MLflow's client sends with every request: the
    one the watcher reads, so the one its payloads name. The key, when set, must agree with it
    (the key is then what the readers send; two different ones would be read one, named the
    other)."""
    from_env = (env.get("MLFLOW_WORKSPACE") or "").strip()
    if not from_env:
        return
    given = values.get("workspace")
    if given is None:
        try:
            values["workspace"] = parse_workspace(from_env)
        except Invalid as exc:
            problems.add("MLFLOW_WORKSPACE", from_env, str(exc))
    elif given != from_env:
        problems.add(
            "mlflow.workspace",
            given,
            f"the workspace MLFLOW_WORKSPACE names ({from_env!r}), or MLFLOW_WORKSPACE unset",
        )


def _delivery(values: dict[str, Any], problems: Problems) -> DeliveryConfig:
    retry = RetryPolicy(**{key: values.pop(key) for key in RETRY_KEYS if key in values})
    if retry.max_delay < retry.initial_delay:
        problems.add(
            "delivery.max_delay",
            format_duration(retry.max_delay),
            "at least delivery.initial_delay",
        )
    return DeliveryConfig(retry=retry, **values)


def _server(values: dict[str, Any], env: Mapping[str, str], problems: Problems) -> ServerConfig:
    token = read_secret(values, env, "server", problems, "metrics_token")
    return ServerConfig(listen=values.get("listen"), metrics_token=token)


def _hints(
    values: dict[str, Any], env: Mapping[str, str], problems: Problems, server: ServerConfig
) -> HintsConfig:
    """On when a secret is set (from the environment or a file, never the config file); served
    on the health server, so they want ``[server] listen``."""
    secret = read_secret(values, env, "hints", problems, "secret")
    source = next((k for k in ("secret_env", "secret_file") if values.get(k)), None)
    fields = {k: v for k, v in values.items() if k not in ("secret_env", "secret_file")}
    if source is not None and server.listen is None:
        problems.note(
            f"hints.{source}",
            "hints are served on the health server: set server.listen too "
            "(or remove hints.secret_env and hints.secret_file)",
        )
    secret_source = None if source is None else f"{source[7:]}:{values[source]}"
    return HintsConfig(
        enabled=source is not None, secret=secret, secret_source=secret_source, **fields
    )


def _console(values: dict[str, Any], env: Mapping[str, str], problems: Problems) -> ConsoleConfig:
    """The console's credentials, each from the environment or a file, never from the config
    file itself; a console that listens wants at least one way in."""
    fields = {k: v for k, v in values.items() if not k.endswith(("_env", "_file"))}
    console = ConsoleConfig(
        **fields,
        token=read_secret(values, env, "console", problems, "token"),
        password=read_secret(values, env, "console", problems, "password"),
        session_key=read_secret(values, env, "console", problems, "session_key"),
    )
    password_key = next((k for k in ("password_env", "password_file") if k in values), None)
    if console.username is not None and password_key is None:
        problems.note("console.username", "wants console.password_env or console.password_file")
    elif password_key is not None and console.username is None:
        problems.note(f"console.{password_key}", "wants console.username (whose password it is)")
    if console.listen is not None and not (
        any(f"{kind}_{how}" in values for kind in ("token", "password") for how in ("env", "file"))
        or console.trusted_header is not None
    ):
        problems.note("console.listen", CONSOLE_NEEDS_CREDENTIAL)
    return console


def _state(
    values: dict[str, Any],
    env: Mapping[str, str],
    problems: Problems,
    from_env: set[tuple[str, str]],
) -> StateConfig | None:
    """SQLite at ``path``, or PostgreSQL at ``url`` (not both); a password only from the
    environment or a file, never from the config file itself."""
    password = read_secret(values, env, "state", problems, "password")
    fields = {k: v for k, v in values.items() if k not in ("password_env", "password_file")}
    url = values.get("url")
    if url is None:
        for key in ("password_env", "password_file", "namespace", "lease"):
            if key in values:
                problems.note(f"state.{key}", "applies only to a PostgreSQL state (state.url)")
        return None if problems.items else StateConfig(**fields)
    url_env, path_env = ("state", "url") in from_env, ("state", "path") in from_env
    if url_env != path_env:
        # One from the environment, one from the file: the URL wins. A unit or an image sets
        # a default path for SQLite (WATCHER_STATE__PATH); a file or a variable that names a
        # PostgreSQL state means it.
        fields.pop("path", None)
    elif "path" in values:
        problems.note("state.path", "and state.url are both set; set only one")
    if urlsplit(url).password is not None and ("state", "url") not in from_env:
        problems.add(
            "state.url",
            redact_uri(url),
            "a URL without a password (give it with state.password_env, state.password_file, "
            "PGPASSWORD or PGPASSFILE, or the whole URL in WATCHER_STATE__URL)",
        )
    return None if problems.items else StateConfig(password=password, **fields)
