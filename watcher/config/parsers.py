"""Value parsers: each takes a raw TOML (or environment) value and returns it typed, or
raises :class:`Invalid` whose message says what was expected (the problem line adds the key
and the value)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from watcher.model import ALL_EVENTS, NATIVE_EVENT_NAMES, PROMPT_EVENTS, EventType

STAGES = ("None", "Staging", "Production", "Archived")
HEADER_BREAK = re.compile(r"[\r\n\x00]")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Invalid(Exception):
    """Raised by a parser: the message says what was expected."""

    def __init__(self, expected: str, shown: str | None = None) -> None:
        super().__init__(expected)
        self.shown = shown
        """What the problem shows instead of the value, when the value holds a secret."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_EXPECTED = 'a positive number of seconds or a duration such as "500ms", "30s", "5m", "1h"'


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "30s", "5m", "1h30m", "1d"."""
    seconds: float
    if isinstance(value, bool):
        raise Invalid(_DURATION_EXPECTED)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise Invalid(_DURATION_EXPECTED) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise Invalid(_DURATION_EXPECTED)
    if not math.isfinite(seconds) or seconds <= 0:
        raise Invalid(_DURATION_EXPECTED)
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"


def duration_between(low: float, high: float) -> Callable[[object], float]:
    """A duration from ``low`` to ``high`` seconds."""

    def parse(value: object) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise Invalid(f"a duration from {format_duration(low)} to {format_duration(high)}")
        return seconds

    return parse


def parse_cadence(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return parse_duration(value)
    except Invalid:
        raise Invalid('"auto" or ' + _DURATION_EXPECTED) from None


def parse_window(value: object) -> float:
    """A duration, or "off" (0: no hot set)."""
    if isinstance(value, str) and value.strip().lower() == "off":
        return 0.0
    try:
        return parse_duration(value)
    except Invalid:
        raise Invalid('"off" or ' + _DURATION_EXPECTED) from None


def parse_fraction(value: object) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise Invalid("a fraction of wall time above 0 and at most 1, e.g. 0.1")
    return float(value)


_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def parse_namespace(value: object) -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise Invalid(
            "a lower-case name of letters, digits and _ (at most 63, not starting with a "
            "digit), e.g. fraud_team"
        )
    return value


def parse_state_url(value: object) -> str:
    """A libpq URL; its password, if any, must come from the environment (checked by the
    loader, which knows where the value came from)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("a postgresql:// URL, e.g. postgresql://watcher@db.internal/mlflow")
    text = value.strip()
    try:
        scheme = urlsplit(text).scheme
    except ValueError:
        raise Invalid("a postgresql:// URL, e.g. postgresql://watcher@db.internal/mlflow") from None
    if scheme not in ("postgresql", "postgres"):
        raise Invalid("a postgresql:// URL, e.g. postgresql://watcher@db.internal/mlflow")
    return text


def parse_nonempty_str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("a non-empty string")
    return value.strip()


def parse_globs(value: object) -> tuple[str, ...]:
    """A non-empty list: an empty one would silently match nothing."""
    globs = parse_optional_globs(value)
    if not globs:
        raise Invalid('a non-empty list of glob patterns such as ["fraud-*"]')
    return globs


def strings_parser(expected: str) -> Callable[[object], tuple[str, ...]]:
    """A list of non-empty strings (one string alone is a list of one)."""

    def parse(value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise Invalid(expected)
        return tuple(value)

    return parse


parse_optional_globs = strings_parser('a list of glob patterns such as ["fraud-*"]')
parse_str_list = strings_parser("a list of non-empty strings")


def int_parser(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise Invalid(f"a whole number from {minimum} to {maximum}")
        return value

    return parse


def choice_parser(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise Invalid("one of " + ", ".join(f'"{c}"' for c in choices))
        return value.lower()

    return parse


def parse_tracking_uri(value: object) -> str:
    uri = parse_nonempty_str(value)
    if uri.startswith(("http://", "https://")) and not urlsplit(uri).hostname:
        raise Invalid("an MLflow tracking URI such as http://mlflow:5000 or sqlite:///mlflow.db")
    return uri


def parse_registry_uri(value: object) -> str:
    if value == "":
        return ""
    return parse_tracking_uri(value)


_UI_URL_EXPECTED = (
    "the MLflow UI's http:// or https:// address, e.g. https://mlflow.example.com or "
    "https://example.com/mlflow (no user:password@, ?query or #fragment)"
)


def parse_ui_url(value: object) -> str:
    """The base the UI links are built on: shown to whoever reads a payload (a Slack channel),
    so no credentials; the route goes after it as ``/#/models/...``, so no query or fragment
    (and none of Slack's link delimiters ``<``, ``>``, ``|``). Kept without a trailing ``/``."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(_UI_URL_EXPECTED)
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid(_UI_URL_EXPECTED) from None
    if "@" in parts.netloc:
        raise Invalid(_UI_URL_EXPECTED, shown="a URL with user:password@ (not shown)")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
        or re.search(r"[\s<>|]", text)
    ):
        raise Invalid(_UI_URL_EXPECTED)
    return text.rstrip("/")


_WORKSPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_workspace(value: object) -> str:
    """An MLflow workspace name, by MLflow's own rule (``WorkspaceNameValidator``)."""
    if not isinstance(value, str) or len(value) < 2 or not _WORKSPACE.fullmatch(value):
        raise Invalid(
            "an MLflow workspace name: 2 to 63 lower-case letters, digits and hyphens, "
            "starting and ending with a letter or digit, e.g. team-a"
        )
    return value


def parse_webhook_url_or_reference(value: object) -> str:
    """A URL, or one with ${VAR} parts (a Slack URL is itself a secret), checked once expanded."""
    if isinstance(value, str) and ENV_REF.search(value):
        return value.strip()
    return parse_webhook_url(value)


def parse_webhook_url(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("an http:// or https:// URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid("an http:// or https:// URL with a valid port") from None
    return value.strip()


PROMPTS_WILDCARD = "PROMPT_*"
"""Every prompt event (any case). "*" is the model registry's events only: prompts are opt-in."""


def parse_events(value: object) -> frozenset[EventType]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Invalid('a non-empty list of event names, or ["*"]')
    known = sorted(e.value for e in EventType)
    events: set[EventType] = set()
    for item in value:
        if item == "*":
            events |= ALL_EVENTS
            continue
        if isinstance(item, str) and item.upper() == PROMPTS_WILDCARD:
            events |= PROMPT_EVENTS
            continue
        event = event_by_name(item)
        if event is None:
            raise Invalid(
                f'event names from: "*", "{PROMPTS_WILDCARD}", {", ".join(known)} (got {item!r})'
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


def parse_stages(value: object) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    known = {s.lower() for s in STAGES}
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.lower() in known for v in value)
    ):
        raise Invalid("a list of stages from " + ", ".join(f'"{s}"' for s in STAGES))
    return frozenset(v.lower() for v in value)


def parse_headers(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str)
        and re.fullmatch(r"[A-Za-z0-9-]+", k)
        and isinstance(v, str)
        and not HEADER_BREAK.search(v)
        for k, v in value.items()
    ):
        raise Invalid(
            'a table of header names to single-line string values, e.g. { Accept = "..." }'
        )
    return dict(value)


def parse_header_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,100}", value.strip()):
        raise Invalid("an HTTP header name such as X-Forwarded-User")
    return value.strip()


def parse_event_type(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise Invalid("a string of 1 to 100 characters (GitHub's limit)")
    return value


def parse_statuses(value: object) -> frozenset[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 499 for v in value
    ):
        raise Invalid("a list of 4xx HTTP status codes, e.g. [400, 401, 403, 404, 410, 422]")
    return frozenset(value)


def parse_bool(value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise Invalid("true or false")
    return value


def parse_retry_table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid('an inline table, e.g. { max_age = "2h", dead_on = [404] }')
    return dict(value)


_LISTEN_EXPECTED = (
    'an address to listen on, "HOST:PORT" such as "127.0.0.1:9464", "0.0.0.0:9464" or '
    '"[::1]:9464", or "" for no server'
)


def parse_listen(value: object) -> tuple[str, int] | None:
    """Parse "HOST:PORT" (an IPv6 host in brackets) as (host, port); "" as None (no server)."""
    if not isinstance(value, str):
        raise Invalid(_LISTEN_EXPECTED)
    text = value.strip()
    if not text:
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", text)
    if match is None:
        raise Invalid(_LISTEN_EXPECTED)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise Invalid(_LISTEN_EXPECTED + " (the port from 1 to 65535)")
    return host, port


RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
"""The health server's own paths: ``[hints] path`` may not take one."""
_HINTS_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def parse_hints_path(value: object) -> str:
    """An absolute URL path (no query) for MLflow's webhooks, apart from the probes'."""
    expected = 'a URL path such as "/mlflow-hints" (letters, digits, "._~-/"; no query)'
    if not isinstance(value, str) or not _HINTS_PATH.fullmatch(value) or value == "/":
        raise Invalid(expected)
    if value in RESERVED_PATHS:
        raise Invalid(f"a path other than {', '.join(RESERVED_PATHS)}")
    return value


def parse_webhook_name(value: object) -> str:
    if not isinstance(value, str) or not _WEBHOOK_NAME.match(value):
        raise Invalid("a name of 1 to 64 letters, digits, '-' or '_'")
    return value


class Problems:
    """Every problem of a config, collected so that all are reported at once."""

    def __init__(self, credentials: bool = True) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []
        """Not problems: old key names still accepted (one line each)."""
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
