"""The typed configuration: TOML file, environment overrides, embedded defaults.

Every problem is collected with its key path (``webhooks[0].url``), the bad value and what was
expected, and reported at once as one :class:`ConfigError`; nothing starts on a bad config.

Precedence, highest first: command-line flags (applied by the CLI), ``WATCHER_SECTION__KEY``
environment variables, the file, the defaults below.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from watcher.errors import ConfigError
from watcher.model import (
    ALIAS_EVENTS,
    ALL_EVENTS,
    NATIVE_EVENT_NAMES,
    STAGE_EVENTS,
    SUPPORTED_EVENTS,
    Event,
    EventType,
)

DEFAULT_CONFIG_NAME = "watcher.toml"
ENV_PREFIX = "WATCHER_"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

SIGNATURE_SCHEMES = ("mlflow", "standard", "databricks", "github", "none")
FORMATS = ("watcher", "databricks", "mlflow", "github", "gitlab", "jenkins", "slack", "template")
TOKEN_FORMATS = ("gitlab", "jenkins")
"""Formats whose secret is a trigger token sent in the body, not a signing key."""
STAGES = ("None", "Staging", "Production", "Archived")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
_WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEADER_BREAK = re.compile(r"[\r\n\x00]")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Secret:
    """A secret value that never shows itself in ``repr``, ``str``, logs or errors."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<redacted>, from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = DEFAULT_TRACKING_URI
    registry_uri: str = ""
    timeout: float = 30.0
    """Seconds one request to MLflow may take before the read is abandoned."""
    page_size: int = 1000

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri

    def __repr__(self) -> str:
        return (
            f"MlflowConfig(tracking_uri={redact_uri(self.tracking_uri)!r}, "
            f"registry_uri={redact_uri(self.registry_uri)!r}, timeout={self.timeout!r}, "
            f"page_size={self.page_size!r})"
        )


@dataclass(frozen=True)
class WatchConfig:
    interval: float = 30.0
    models: tuple[str, ...] = ("*",)
    exclude_models: tuple[str, ...] = ()
    models_interval: float | None = None
    """Seconds between full scans of the registered models (aliases, model deletions);
    None: auto, spaced by their measured cost to keep reading within max_duty."""
    full_scan_interval: float | None = None
    """Seconds between full scans of the versions (version tags, safety net); None: auto."""
    max_duty: float = 0.1
    """With auto cadences: the share of wall time the watcher may spend reading MLflow."""

    def watches(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.models) and not any(
            fnmatch.fnmatchcase(model_name, p) for p in self.exclude_models
        )


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path(".watcher/state.db")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class ServerConfig:
    """The health and metrics HTTP server; off unless ``listen`` is set."""

    listen: tuple[str, int] | None = None
    """(host, port) to bind, or None: no server."""
    metrics_token: Secret | None = None
    """When set, /metrics wants ``Authorization: Bearer <token>``; the probes never do."""

    @property
    def display_listen(self) -> str:
        if self.listen is None:
            return ""
        host, port = self.listen
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again, and when it is given up as dead."""

    initial_delay: float = 2.0
    """Seconds before the first retry (the base of the exponential backoff)."""
    max_delay: float = 3600.0
    """Cap of one backoff step (and of an honoured Retry-After), in seconds."""
    max_age: float = 86400.0
    """Seconds after detection when a delivery that keeps failing is declared dead."""
    max_attempts: int = 30
    dead_on: frozenset[int] | None = None
    """HTTP statuses that are dead at once; None: every 4xx but 408, 425 and 429."""


@dataclass(frozen=True)
class DeliveryConfig:
    initial_delay: float = 2.0
    max_delay: float = 3600.0
    max_age: float = 86400.0
    max_attempts: int = 30
    dead_on: frozenset[int] | None = None
    workers: int = 4
    """Deliveries in flight at once per webhook (each model's events stay in order)."""
    shutdown_grace: float = 10.0
    """On SIGTERM, how long in-flight requests may take to finish; the rest stays queued."""
    connect_timeout: float = 5.0
    allowed_hosts: tuple[str, ...] = ("*",)
    """Globs of host names webhooks may point at; a URL outside them is a config error."""
    deny_private_addresses: bool = False
    """Refuse to deliver to loopback, private, link-local and reserved addresses, checked on
    the connected socket (so a DNS name cannot smuggle one in)."""
    retention: float = 7 * 86400.0
    """Delivered rows (and their attempts) are pruned after this long; dead rows never are."""

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            max_age=self.max_age,
            max_attempts=self.max_attempts,
            dead_on=self.dead_on,
        )


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    events: frozenset[EventType] = ALL_EVENTS
    secret: Secret | None = None
    signature: str = "none"
    timeout: float = 10.0
    format: str = "watcher"
    models: tuple[str, ...] = ("*",)
    to_stages: frozenset[str] | None = None
    """Lower-case stage names; None: every stage. Applies to stage-transition events only."""
    aliases: tuple[str, ...] | None = None
    """Alias globs; None: every alias. Applies to alias events only."""
    event_type: str | None = None
    ref: str = "main"
    template: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    previous_secrets: tuple[Secret, ...] = ()
    username: str | None = None
    password: Secret | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 5.0
    ca_bundle: str | None = None
    """A CA bundle file to verify the receiver's TLS certificate with (default: the system's)."""
    deny_private_addresses: bool = False
    url_is_secret: bool = False
    """The URL came from ${VAR} (a Slack webhook URL is a secret): never shown whole."""

    @property
    def display_url(self) -> str:
        if self.url_is_secret:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/<redacted>"
        return redact_uri(self.url)

    def wants(self, event: Event) -> bool:
        """Whether this webhook subscribes to the event (type, model, stage and alias filters)."""
        if event.type not in self.events:
            return False
        if not any(fnmatch.fnmatchcase(event.model_name, p) for p in self.models):
            return False
        if (
            self.to_stages is not None
            and event.type in STAGE_EVENTS
            and (event.to_stage or "").lower() not in self.to_stages
        ):
            return False
        return not (
            self.aliases is not None
            and event.type in ALIAS_EVENTS
            and not any(fnmatch.fnmatchcase(event.alias or "", p) for p in self.aliases)
        )

    def __repr__(self) -> str:
        return (
            f"WebhookConfig(name={self.name!r}, url={self.display_url!r}, "
            f"events={sorted(e.value for e in self.events)!r}, format={self.format!r}, "
            f"secret={self.secret!r}, signature={self.signature!r}, timeout={self.timeout!r})"
        )


@dataclass(frozen=True)
class Config:
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    source: str = "embedded defaults"

    def webhook(self, name: str) -> WebhookConfig | None:
        return next((w for w in self.webhooks if w.name == name), None)


# --------------------------------------------------------------------------- value parsers


class _Invalid(Exception):
    """Raised by a parser: the message says what was expected."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_EXPECTED = 'a positive number of seconds or a duration such as "500ms", "30s", "5m", "1h"'


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "30s", "5m", "1h30m", "1d"."""
    seconds: float
    if isinstance(value, bool):
        raise _Invalid(_DURATION_EXPECTED)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise _Invalid(_DURATION_EXPECTED) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise _Invalid(_DURATION_EXPECTED)
    if not math.isfinite(seconds) or seconds <= 0:
        raise _Invalid(_DURATION_EXPECTED)
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"


def _parse_cadence(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return parse_duration(value)
    except _Invalid:
        raise _Invalid('"auto" or ' + _DURATION_EXPECTED) from None


def _parse_fraction(value: object) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise _Invalid("a fraction of wall time above 0 and at most 1, e.g. 0.1")
    return float(value)


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


def _parse_nonempty_str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value.strip()


def _parse_globs(value: object) -> tuple[str, ...]:
    """A non-empty list: an empty one would silently match nothing."""
    globs = _parse_optional_globs(value)
    if not globs:
        raise _Invalid('a non-empty list of glob patterns such as ["fraud-*"]')
    return globs


def _parse_optional_globs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid('a list of glob patterns such as ["fraud-*"]')
    return tuple(value)


def _int_parser(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise _Invalid(f"a whole number from {minimum} to {maximum}")
        return value

    return parse


def _choice_parser(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise _Invalid("one of " + ", ".join(f'"{c}"' for c in choices))
        return value.lower()

    return parse


def _parse_tracking_uri(value: object) -> str:
    uri = _parse_nonempty_str(value)
    if uri.startswith(("http://", "https://")) and not urlsplit(uri).hostname:
        raise _Invalid("an MLflow tracking URI such as http://mlflow:5000 or sqlite:///mlflow.db")
    return uri


def _parse_registry_uri(value: object) -> str:
    if value == "":
        return ""
    return _parse_tracking_uri(value)


def _parse_webhook_url_or_reference(value: object) -> str:
    """A URL, or one with ${VAR} parts (a Slack URL is itself a secret), checked once expanded."""
    if isinstance(value, str) and _ENV_REF.search(value):
        return value.strip()
    return _parse_webhook_url(value)


def _parse_webhook_url(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("an http:// or https:// URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _Invalid("an http:// or https:// URL with a valid port") from None
    return value.strip()


def _parse_events(value: object) -> frozenset[EventType]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid('a non-empty list of event names, or ["*"]')
    supported = sorted(e.value for e in SUPPORTED_EVENTS)
    events: set[EventType] = set()
    for item in value:
        if item == "*":
            events |= ALL_EVENTS
            continue
        event = event_by_name(item)
        if event is None:
            raise _Invalid(f'event names from: "*", {", ".join(supported)} (got {item!r})')
        if event not in SUPPORTED_EVENTS:
            raise _Invalid(
                f"events this version detects: {', '.join(supported)} "
                f"({item!r} is not detected yet)"
            )
        events.add(event)
    return frozenset(events)


def event_by_name(name: object) -> EventType | None:
    """A canonical (any case) or MLflow native event name, or None."""
    if not isinstance(name, str):
        return None
    if name in NATIVE_EVENT_NAMES:
        return NATIVE_EVENT_NAMES[name]
    try:
        return EventType(name.upper())
    except ValueError:
        return None


def _parse_stages(value: object) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    known = {s.lower() for s in STAGES}
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.lower() in known for v in value)
    ):
        raise _Invalid("a list of stages from " + ", ".join(f'"{s}"' for s in STAGES))
    return frozenset(v.lower() for v in value)


def _parse_str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid("a list of non-empty strings")
    return tuple(value)


def _parse_headers(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str)
        and re.fullmatch(r"[A-Za-z0-9-]+", k)
        and isinstance(v, str)
        and not _HEADER_BREAK.search(v)
        for k, v in value.items()
    ):
        raise _Invalid(
            'a table of header names to single-line string values, e.g. { Accept = "..." }'
        )
    return dict(value)


def _parse_event_type(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise _Invalid("a string of 1 to 100 characters (GitHub's limit)")
    return value


def _parse_statuses(value: object) -> frozenset[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 499 for v in value
    ):
        raise _Invalid("a list of 4xx HTTP status codes, e.g. [400, 401, 403, 404, 410, 422]")
    return frozenset(value)


def _parse_bool(value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _parse_retry_table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid('an inline table, e.g. { max_age = "2h", dead_on = [404] }')
    return dict(value)


_LISTEN_EXPECTED = (
    'an address to listen on, "HOST:PORT" such as "127.0.0.1:9464", "0.0.0.0:9464" or '
    '"[::1]:9464", or "" for no server'
)


def parse_listen(value: object) -> tuple[str, int] | None:
    """Parse "HOST:PORT" (an IPv6 host in brackets) as (host, port); "" as None (no server)."""
    if not isinstance(value, str):
        raise _Invalid(_LISTEN_EXPECTED)
    text = value.strip()
    if not text:
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text)
    if match is None:
        raise _Invalid(_LISTEN_EXPECTED)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise _Invalid(_LISTEN_EXPECTED + " (the port from 1 to 65535)")
    return host, port


def _parse_webhook_name(value: object) -> str:
    if not isinstance(value, str) or not _WEBHOOK_NAME.match(value):
        raise _Invalid("a name of 1 to 64 letters, digits, '-' or '_'")
    return value


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Key:
    parse: Callable[[object], Any]
    is_collection: bool = False
    """Lists and tables arrive from the environment as JSON."""


_SECTIONS: dict[str, dict[str, _Key]] = {
    "mlflow": {
        "tracking_uri": _Key(_parse_tracking_uri),
        "registry_uri": _Key(_parse_registry_uri),
        "timeout": _Key(parse_duration),
        "page_size": _Key(_int_parser(1, 10_000)),
    },
    "watch": {
        "interval": _Key(parse_duration),
        "models": _Key(_parse_globs, is_collection=True),
        "exclude_models": _Key(_parse_optional_globs, is_collection=True),
        "models_interval": _Key(_parse_cadence),
        "full_scan_interval": _Key(_parse_cadence),
        "max_duty": _Key(_parse_fraction),
    },
    "state": {"path": _Key(_parse_nonempty_str)},
    "log": {"level": _Key(_choice_parser(LOG_LEVELS)), "format": _Key(_choice_parser(LOG_FORMATS))},
    "delivery": {
        "initial_delay": _Key(parse_duration),
        "max_delay": _Key(parse_duration),
        "max_age": _Key(parse_duration),
        "max_attempts": _Key(_int_parser(1, 1000)),
        "dead_on": _Key(_parse_statuses, is_collection=True),
        "workers": _Key(_int_parser(1, 64)),
        "shutdown_grace": _Key(parse_duration),
        "connect_timeout": _Key(parse_duration),
        "allowed_hosts": _Key(_parse_globs, is_collection=True),
        "deny_private_addresses": _Key(_parse_bool),
        "retention": _Key(parse_duration),
    },
    "server": {
        "listen": _Key(parse_listen),
        "metrics_token_env": _Key(_parse_nonempty_str),
        "metrics_token_file": _Key(_parse_nonempty_str),
    },
}

_RETRY_KEYS = {
    key: _SECTIONS["delivery"][key]
    for key in ("initial_delay", "max_delay", "max_age", "max_attempts", "dead_on")
}

_WEBHOOK_KEYS: dict[str, _Key] = {
    "name": _Key(_parse_webhook_name),
    "url": _Key(_parse_webhook_url_or_reference),
    "events": _Key(_parse_events, is_collection=True),
    "secret_env": _Key(_parse_nonempty_str),
    "secret_file": _Key(_parse_nonempty_str),
    "signature": _Key(_choice_parser(SIGNATURE_SCHEMES)),
    "previous_secrets_env": _Key(_parse_str_list, is_collection=True),
    "timeout": _Key(parse_duration),
    "connect_timeout": _Key(parse_duration),
    "retry": _Key(_parse_retry_table, is_collection=True),
    "ca_bundle": _Key(_parse_nonempty_str),
    "format": _Key(_choice_parser(FORMATS)),
    "models": _Key(_parse_globs, is_collection=True),
    "to_stages": _Key(_parse_stages, is_collection=True),
    "aliases": _Key(_parse_globs, is_collection=True),
    "event_type": _Key(_parse_event_type),
    "ref": _Key(_parse_nonempty_str),
    "template": _Key(_parse_nonempty_str),
    "template_file": _Key(_parse_nonempty_str),
    "content_type": _Key(_parse_nonempty_str),
    "headers": _Key(_parse_headers, is_collection=True),
    "username": _Key(_parse_nonempty_str),
    "password_env": _Key(_parse_nonempty_str),
    "password_file": _Key(_parse_nonempty_str),
}


class _Problems:
    def __init__(self, credentials: bool = True) -> None:
        self.items: list[str] = []
        self.credentials = credentials
        """False for commands that only read the state: a secret (or a ${VAR} of a URL or a
        header) that cannot be had is then no problem, since nothing is sent."""

    def add(self, path: str, value: object, expected: str) -> None:
        self.items.append(f"{path}: got {_show(value)}, expected {expected}")

    def credential(self, path: str, value: object, expected: str) -> None:
        """A secret, or what it comes from, is missing: a problem only when one is needed."""
        if self.credentials:
            self.add(path, value, expected)

    def note(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _show(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- loading


def resolve_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $WATCHER_CONFIG, else ./watcher.toml if it exists, else None (defaults)."""
    if explicit:
        return Path(explicit)
    if env.get("WATCHER_CONFIG"):
        return Path(env["WATCHER_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def load_config(
    path: Path | None, env: Mapping[str, str] | None = None, *, credentials: bool = True
) -> Config:
    """Read, override from the environment, validate. Raises ConfigError with every problem.

    ``credentials=False`` is for the commands that read the state file and send nothing
    (status, healthcheck, deliveries...): they work where the daemon's secrets are not set,
    such as an operator's shell beside a systemd service; the webhooks' secrets are then None.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "embedded defaults"
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
        except IsADirectoryError:
            raise ConfigError([f"config file {str(path)!r} is a directory"]) from None
        except PermissionError:
            raise ConfigError([f"config file {str(path)!r} is not readable"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {str(path)!r} is not valid TOML: {exc}"]) from None
        source = str(path)
    problems = _Problems(credentials)
    _apply_env_overrides(raw, env, problems)
    base_dir = path.parent if path is not None else Path()
    config = _build(raw, env, problems, source, base_dir)
    if problems.items:
        raise ConfigError(problems.items)
    assert config is not None
    return config


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str], problems: _Problems) -> None:
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
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        spec = _SECTIONS.get(section, {}).get(key)
        if spec is None:
            problems.note(name, "names no configuration key (expected WATCHER_SECTION__KEY)")
            continue
        value: Any = env[name]
        if spec.is_collection:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                problems.add(name, value, "a JSON list")
                continue
        table = raw.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value


def _build(
    raw: dict[str, Any], env: Mapping[str, str], problems: _Problems, source: str, base_dir: Path
) -> Config | None:
    sections: dict[str, dict[str, Any]] = {}
    for key in raw:
        if key not in _SECTIONS and key != "webhooks":
            problems.note(
                key, f"unknown section; expected one of {', '.join([*_SECTIONS, 'webhooks'])}"
            )
    for section, keys in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            problems.add(section, table, "a table")
            continue
        sections[section] = _parse_table(table, keys, section, problems)

    mlflow_values = sections.get("mlflow", {})
    if "tracking_uri" not in mlflow_values:
        mlflow_values["tracking_uri"] = env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if "registry_uri" not in mlflow_values and env.get("MLFLOW_REGISTRY_URI"):
        mlflow_values["registry_uri"] = env["MLFLOW_REGISTRY_URI"]
    state_values = sections.get("state", {})
    if "path" in state_values:
        state_values["path"] = Path(state_values["path"])
    delivery = DeliveryConfig(**sections.get("delivery", {}))
    if delivery.max_delay < delivery.initial_delay:
        problems.add(
            "delivery.max_delay",
            format_duration(delivery.max_delay),
            "at least delivery.initial_delay",
        )

    webhooks = _parse_webhooks(raw.get("webhooks", []), env, problems, base_dir, delivery)
    server_values = sections.get("server", {})
    server = ServerConfig(
        listen=server_values.get("listen"),
        metrics_token=_read_secret(server_values, env, "server", problems, "metrics_token"),
    )
    if problems.items:
        return None
    return Config(
        mlflow=MlflowConfig(**mlflow_values),
        watch=WatchConfig(**sections.get("watch", {})),
        state=StateConfig(**state_values),
        log=LogConfig(**sections.get("log", {})),
        delivery=delivery,
        webhooks=webhooks,
        server=server,
        source=source,
    )


def _parse_table(
    table: Mapping[str, Any], keys: Mapping[str, _Key], path: str, problems: _Problems
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in table.items():
        spec = keys.get(key)
        if spec is None:
            problems.note(f"{path}.{key}", f"unknown key; expected one of {', '.join(keys)}")
            continue
        try:
            values[key] = spec.parse(value)
        except _Invalid as exc:
            problems.add(f"{path}.{key}", value, str(exc))
    return values


def _parse_webhooks(
    raw: object,
    env: Mapping[str, str],
    problems: _Problems,
    base_dir: Path,
    delivery: DeliveryConfig,
) -> tuple[WebhookConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
        problems.add("webhooks", raw, "a list of tables ([[webhooks]] in TOML)")
        return ()
    webhooks: list[WebhookConfig] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(raw):
        path = f"webhooks[{index}]"
        values = _parse_table(table, _WEBHOOK_KEYS, path, problems)
        for required in ("name", "url"):
            if required not in table:
                problems.note(f"{path}.{required}", "missing; every webhook needs a name and a url")
        name = values.get("name")
        if name is not None:
            if name in seen:
                problems.add(f"{path}.name", name, f"a unique name (webhooks[{seen[name]}] has it)")
            seen.setdefault(name, index)
        webhook = _build_webhook(values, env, path, problems, base_dir, delivery)
        if webhook is not None:
            webhooks.append(webhook)
    return tuple(webhooks)


def _build_webhook(
    values: dict[str, Any],
    env: Mapping[str, str],
    path: str,
    problems: _Problems,
    base_dir: Path,
    delivery: DeliveryConfig,
) -> WebhookConfig | None:
    from watcher.signing import check_secret

    fmt = values.get("format", "watcher")
    secret = _read_secret(values, env, path, problems, "secret")
    password = _read_secret(values, env, path, problems, "password")
    previous = tuple(
        s
        for i, var in enumerate(values.get("previous_secrets_env", ()))
        if (s := _env_secret(var, env, f"{path}.previous_secrets_env[{i}]", problems))
    )
    # A gitlab or jenkins secret is the trigger token in the body: nothing to sign with.
    default_signature = "mlflow" if secret is not None and fmt not in TOKEN_FORMATS else "none"
    signature = values.get("signature", default_signature)
    if signature != "none" and secret is None and not _has_secret_source(values):
        problems.add(f"{path}.signature", signature, "secret_env or secret_file to sign with")
    if secret is not None and signature != "none":
        expected = check_secret(signature, secret.reveal())
        if expected is not None:
            problems.note(f"{path}.secret", f"does not suit signature {signature!r}: {expected}")
    for i, old in enumerate(previous):
        expected = check_secret("standard", old.reveal()) if signature == "standard" else None
        if expected is not None:
            problems.note(f"{path}.previous_secrets_env[{i}]", f"is not a usable key: {expected}")
    if previous and signature != "standard":
        problems.note(f"{path}.previous_secrets_env", 'is only used with signature = "standard"')
    if ("password_env" in values or "password_file" in values) != ("username" in values):
        problems.note(f"{path}.username", "username and password_env/password_file go together")
    headers: list[tuple[str, Secret]] = []
    for key, raw in values.get("headers", {}).items():
        expanded = _expand_env(raw, env, f"{path}.headers.{key}", problems)
        if expanded is not None and _HEADER_BREAK.search(expanded):
            problems.note(f"{path}.headers.{key}", "expands to a value with a line break")
        elif expanded is not None:
            headers.append((key, Secret(expanded, f"header {key}")))
    template = _template_source(values, path, problems, base_dir, fmt)
    retry = replace(
        delivery.retry,
        **_parse_table(values.get("retry", {}), _RETRY_KEYS, f"{path}.retry", problems),
    )
    if retry.max_delay < retry.initial_delay:
        problems.add(
            f"{path}.retry.max_delay", format_duration(retry.max_delay), "at least initial_delay"
        )
    url = values.get("url")
    url_is_secret = url is not None and bool(_ENV_REF.search(url))
    if url is not None and url_is_secret:
        expanded = _expand_env(url, env, f"{path}.url", problems)
        try:
            url = None if expanded is None else _parse_webhook_url(expanded)
        except _Invalid:
            problems.note(f"{path}.url", f"{values['url']} does not expand to an http(s) URL")
            url = None
    if url is not None:
        host = urlsplit(url).hostname or ""
        if not any(fnmatch.fnmatchcase(host, p) for p in delivery.allowed_hosts):
            problems.add(
                f"{path}.url",
                redact_uri(url),
                f"a host allowed by delivery.allowed_hosts ({', '.join(delivery.allowed_hosts)})",
            )
    ca_bundle = values.get("ca_bundle")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        problems.add(f"{path}.ca_bundle", ca_bundle, "a readable CA bundle file")
    if url is None and url_is_secret and not problems.credentials:
        url = values["url"]  # unexpanded: nothing is sent to it, and it is never shown
    if "name" not in values or url is None:
        return None
    webhook = WebhookConfig(
        name=values["name"],
        url=url,
        url_is_secret=url_is_secret,
        events=values.get("events", ALL_EVENTS),
        secret=secret,
        signature=signature,
        timeout=values.get("timeout", 10.0),
        format=fmt,
        models=values.get("models", ("*",)),
        to_stages=values.get("to_stages"),
        aliases=values.get("aliases"),
        event_type=values.get("event_type"),
        ref=values.get("ref", "main"),
        template=template,
        content_type=values.get("content_type"),
        headers=tuple(headers),
        previous_secrets=previous,
        username=values.get("username"),
        password=password,
        retry=retry,
        connect_timeout=values.get("connect_timeout", delivery.connect_timeout),
        ca_bundle=ca_bundle,
        deny_private_addresses=delivery.deny_private_addresses,
    )
    if template is not None:
        _check_template(webhook, template, f"{path}.template", problems)
    return webhook


def _check_template(webhook: WebhookConfig, source: str, path: str, problems: _Problems) -> None:
    """Compile the template and render it against an example of every subscribed event."""
    from watcher.payloads import TemplateError, compile_template, validate_template

    try:
        compiled = compile_template(source)
    except TemplateError as exc:
        problems.note(path, f"webhook {webhook.name!r}: {exc}")
        return
    for problem in validate_template(
        compiled, sorted(webhook.events), webhook.name, content_type=webhook.content_type
    ):
        problems.note(path, f"webhook {webhook.name!r}: {problem}")


def _template_source(
    values: Mapping[str, Any], path: str, problems: _Problems, base_dir: Path, fmt: str
) -> str | None:
    inline, file = values.get("template"), values.get("template_file")
    if (inline or file) and fmt != "template":
        problems.note(f"{path}.format", 'must be "template" when a template is given')
        return None
    if fmt != "template":
        return None
    if inline and file:
        problems.note(f"{path}.template_file", "set only one of template and template_file")
        return None
    if file:
        target = Path(base_dir, str(file))
        try:
            return target.read_text(encoding="utf-8")
        except OSError as exc:
            problems.add(f"{path}.template_file", file, f"a readable file ({exc.strerror})")
            return None
    if not inline:
        problems.note(
            f"{path}.template", 'missing; format = "template" needs template or template_file'
        )
        return None
    return str(inline)


def _has_secret_source(values: Mapping[str, Any]) -> bool:
    """A secret is configured (its own problem is reported if it cannot be read)."""
    return bool(values.get("secret_env") or values.get("secret_file"))


def _env_secret(var: str, env: Mapping[str, str], path: str, problems: _Problems) -> Secret | None:
    if not env.get(var):
        problems.credential(path, var, "the name of a set, non-empty environment variable")
        return None
    return Secret(env[var], f"env:{var}")


def _read_secret(
    values: Mapping[str, Any], env: Mapping[str, str], path: str, problems: _Problems, kind: str
) -> Secret | None:
    """``{kind}_env`` or ``{kind}_file``: a secret from the environment or a file."""
    var, file = values.get(f"{kind}_env"), values.get(f"{kind}_file")
    if var and file:
        problems.note(f"{path}.{kind}_file", f"set only one of {kind}_env and {kind}_file")
        return None
    if var:
        return _env_secret(var, env, f"{path}.{kind}_env", problems)
    if file:
        expanded = _expand_env(file, env, f"{path}.{kind}_file", problems)
        if expanded is None:
            return None
        try:
            text = Path(expanded).read_text(encoding="utf-8")
        except OSError as exc:
            problems.credential(f"{path}.{kind}_file", file, f"a readable file ({exc.strerror})")
            return None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            problems.credential(f"{path}.{kind}_file", file, "a file holding a non-empty secret")
            return None
        return Secret(text, f"file:{expanded}")
    return None


def _expand_env(text: str, env: Mapping[str, str], path: str, problems: _Problems) -> str | None:
    missing = [m for m in _ENV_REF.findall(text) if m not in env]
    if missing:
        problems.credential(
            path, text, f"set environment variables (missing: {', '.join(missing)})"
        )
        return None
    return _ENV_REF.sub(lambda m: env[m.group(1)], text)


# --------------------------------------------------------------------------- display


def redact_uri(uri: str) -> str:
    """Hide a URI's password and query values (tokens live there), so it can be shown."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.password is None and not parts.query:
        return uri
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    if parts.query:
        hidden = "&".join(f"{p.partition('=')[0]}=***" for p in parts.query.split("&"))
        parts = parts._replace(query=hidden)
    return urlunsplit(parts)


def effective_config(config: Config) -> dict[str, Any]:
    """The configuration as it will be used, secrets redacted, durations as strings."""
    return {
        "mlflow": {
            "tracking_uri": redact_uri(config.mlflow.tracking_uri),
            "registry_uri": redact_uri(config.mlflow.effective_registry_uri),
            "timeout": format_duration(config.mlflow.timeout),
            "page_size": config.mlflow.page_size,
        },
        "watch": {
            "interval": format_duration(config.watch.interval),
            "models": list(config.watch.models),
            "exclude_models": list(config.watch.exclude_models),
            "models_interval": _cadence(config.watch.models_interval),
            "full_scan_interval": _cadence(config.watch.full_scan_interval),
            "max_duty": config.watch.max_duty,
        },
        "state": {"path": str(config.state.path)},
        "log": {"level": config.log.level, "format": config.log.format},
        "delivery": {
            "initial_delay": format_duration(config.delivery.initial_delay),
            "max_delay": format_duration(config.delivery.max_delay),
            "max_age": format_duration(config.delivery.max_age),
            "max_attempts": config.delivery.max_attempts,
            **(
                {"dead_on": sorted(config.delivery.dead_on)}
                if config.delivery.dead_on is not None
                else {}
            ),
            "workers": config.delivery.workers,
            "shutdown_grace": format_duration(config.delivery.shutdown_grace),
            "connect_timeout": format_duration(config.delivery.connect_timeout),
            "allowed_hosts": list(config.delivery.allowed_hosts),
            "deny_private_addresses": config.delivery.deny_private_addresses,
            "retention": format_duration(config.delivery.retention),
        },
        "server": {
            "listen": config.server.display_listen,
            "metrics_token": (
                f"<redacted, from {config.server.metrics_token.source}>"
                if config.server.metrics_token
                else "<none>"
            ),
        },
        "webhooks": [
            {
                "name": w.name,
                "url": w.display_url,
                "events": sorted(e.value for e in w.events),
                "format": w.format,
                "models": list(w.models),
                **({"to_stages": sorted(w.to_stages)} if w.to_stages is not None else {}),
                **({"aliases": list(w.aliases)} if w.aliases is not None else {}),
                **({"event_type": w.event_type} if w.event_type else {}),
                **({"ref": w.ref} if w.format == "gitlab" else {}),
                **({"content_type": w.content_type} if w.content_type else {}),
                "secret": f"<redacted, from {w.secret.source}>" if w.secret else "<none>",
                "signature": w.signature,
                **(
                    {
                        "previous_secrets": [
                            f"<redacted, from {s.source}>" for s in w.previous_secrets
                        ]
                    }
                    if w.previous_secrets
                    else {}
                ),
                **({"headers": [name for name, _ in w.headers]} if w.headers else {}),
                **({"username": w.username} if w.username else {}),
                "timeout": format_duration(w.timeout),
                "connect_timeout": format_duration(w.connect_timeout),
                **({"ca_bundle": w.ca_bundle} if w.ca_bundle else {}),
                **({"retry": _retry_table(w.retry)} if w.retry != config.delivery.retry else {}),
            }
            for w in config.webhooks
        ],
    }


def _cadence(seconds: float | None) -> str:
    return "auto" if seconds is None else format_duration(seconds)


def _retry_table(retry: RetryPolicy) -> dict[str, Any]:
    table: dict[str, Any] = {
        "initial_delay": format_duration(retry.initial_delay),
        "max_delay": format_duration(retry.max_delay),
        "max_age": format_duration(retry.max_age),
        "max_attempts": retry.max_attempts,
    }
    if retry.dead_on is not None:
        table["dead_on"] = sorted(retry.dead_on)
    return table


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the effective config (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []
    for section, table in data.items():
        if isinstance(table, list):
            for item in table:
                lines.append(f"\n[[{section}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
        else:
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
