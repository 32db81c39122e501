"""The key tables: for every configuration key, how its value is read and how it is shown.

A key's type and default are those of the dataclass field of the same name
(:mod:`watcher.config.types`); its parser and its display are here, once. Loading
(:mod:`watcher.config.load`), the environment overrides and ``check-config``
(:mod:`watcher.config.display`) all walk these tables, so a new key is one field and one line.
The tables are in the order the keys are listed in "unknown key" problems.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from watcher.config.parsers import (
    Invalid,
    Problems,
    choice_parser,
    duration_between,
    format_duration,
    int_parser,
    parse_bool,
    parse_cadence,
    parse_duration,
    parse_event_type,
    parse_events,
    parse_fraction,
    parse_globs,
    parse_header_name,
    parse_headers,
    parse_hints_path,
    parse_listen,
    parse_namespace,
    parse_nonempty_str,
    parse_optional_globs,
    parse_registry_uri,
    parse_retry_table,
    parse_stages,
    parse_state_url,
    parse_statuses,
    parse_str_list,
    parse_tracking_uri,
    parse_ui_url,
    parse_webhook_name,
    parse_webhook_url_or_reference,
    parse_window,
    parse_workspace,
)
from watcher.config.types import (
    MAX_HINT_TOLERANCE,
    MAX_LEASE,
    MIN_HINT_TOLERANCE,
    MIN_LEASE,
    Secret,
    redact_uri,
)
from watcher.payloads.formats import FORMATS
from watcher.signing import SCHEMES

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")

OMIT: Any = object()
"""What a ``show`` returns for a value check-config leaves out (an unset optional key)."""


def as_is(value: Any) -> Any:
    return value


def listed(value: Any) -> Any:
    return list(value)


def cadence(seconds: float | None) -> str:
    return "auto" if seconds is None else format_duration(seconds)


def window(seconds: float) -> str:
    return "off" if seconds <= 0 else format_duration(seconds)


def redacted(secret: Secret | None) -> str:
    return f"<redacted, from {secret.source}>" if secret else "<none>"


def unless_none(show: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Shown when set (not None), left out otherwise."""
    return lambda value: OMIT if value is None else show(value)


def if_set(show: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Shown when set and not empty, left out otherwise."""
    return lambda value: show(value) if value else OMIT


@dataclass(frozen=True)
class Key:
    """One configuration key (its type and default are its dataclass field's)."""

    parse: Callable[[object], Any] | None
    """Raw TOML or environment value -> typed value, or :class:`Invalid`. None: a value that
    is only shown, built from other keys (a secret from its ``_env`` or ``_file`` key)."""
    show: Callable[[Any], Any] | None = as_is
    """The value as check-config shows it (:data:`OMIT`: left out); None: never shown."""
    builds: bool = False
    """The section's builder turns it into another field (``secret_env`` into ``secret``)
    instead of the value going into the field of the same name."""
    shown_from: str | None = None
    """The attribute shown, when not the field of the key's name (a redacted URL)."""
    is_collection: bool = False
    """Lists and tables arrive from the environment as JSON."""
    old_name: str | None = None
    """A former name of the key, still accepted with a deprecation warning."""
    for_format: str | None = None
    """A webhook key used by one format only: shown for that format only."""

    def shown(self, name: str, owner: object) -> Any:
        assert self.show is not None
        return self.show(attrgetter(self.shown_from or name)(owner))


def duration_key() -> Key:
    return Key(parse_duration, format_duration)


def globs_key(parse: Callable[[object], Any] = parse_globs) -> Key:
    return Key(parse, listed, is_collection=True)


def source_key() -> Key:
    """A ``..._env`` or ``..._file`` key: where a secret (or a template) comes from."""
    return Key(parse_nonempty_str, None, builds=True)


RETRY_KEYS: Mapping[str, Key] = {
    "initial_delay": duration_key(),
    "max_delay": duration_key(),
    "max_age": duration_key(),
    "max_attempts": Key(int_parser(1, 1000)),
    "dead_on": Key(parse_statuses, unless_none(sorted), is_collection=True),
}
"""The keys of a :class:`RetryPolicy`: in ``[delivery]`` and in a webhook's ``retry`` table."""

SECTIONS: Mapping[str, Mapping[str, Key]] = {
    "mlflow": {
        "tracking_uri": Key(parse_tracking_uri, redact_uri),
        "registry_uri": Key(parse_registry_uri, redact_uri, shown_from="effective_registry_uri"),
        "timeout": duration_key(),
        "page_size": Key(int_parser(1, 10_000)),
        "ui_url": Key(parse_ui_url, unless_none(as_is)),
        "workspace": Key(parse_workspace, unless_none(as_is)),
    },
    "watch": {
        "interval": duration_key(),
        "models": globs_key(),
        "exclude_models": globs_key(parse_optional_globs),
        "models_scan_interval": Key(parse_cadence, cadence, old_name="models_interval"),
        "versions_scan_interval": Key(parse_cadence, cadence, old_name="full_scan_interval"),
        "max_duty": Key(parse_fraction),
        "hot_window": Key(parse_window, window),
    },
    "state": {
        "path": Key(lambda value: Path(parse_nonempty_str(value)), str),
        "url": Key(parse_state_url, unless_none(redact_uri)),
        "namespace": Key(parse_namespace),
        "password_env": source_key(),
        "password_file": source_key(),
        "password": Key(None, if_set(redacted)),
        "lease": Key(duration_between(MIN_LEASE, MAX_LEASE), unless_none(format_duration)),
        "connect_timeout": duration_key(),
        "statement_timeout": duration_key(),
    },
    "log": {"level": Key(choice_parser(LOG_LEVELS)), "format": Key(choice_parser(LOG_FORMATS))},
    "delivery": {
        **RETRY_KEYS,
        "workers": Key(int_parser(1, 64)),
        "shutdown_grace": duration_key(),
        "connect_timeout": duration_key(),
        "allowed_hosts": globs_key(),
        "deny_private_addresses": Key(parse_bool),
        "retention": duration_key(),
    },
    "server": {
        "listen": Key(parse_listen, shown_from="display_listen"),
        "metrics_token_env": source_key(),
        "metrics_token_file": source_key(),
        "metrics_token": Key(None, redacted),
    },
    "console": {
        "listen": Key(parse_listen, shown_from="display_listen"),
        "token_env": source_key(),
        "token_file": source_key(),
        "token": Key(None, if_set(redacted)),
        "username": Key(parse_nonempty_str, if_set(as_is)),
        "password_env": source_key(),
        "password_file": source_key(),
        "password": Key(None, if_set(redacted)),
        "trusted_header": Key(parse_header_name, if_set(as_is)),
        "read_only": Key(parse_bool),
        "session_key_env": source_key(),
        "session_key_file": source_key(),
        "session_key": Key(None, if_set(redacted)),
    },
    "hints": {
        "secret_env": source_key(),
        "secret_file": source_key(),
        "secret": Key(None, if_set(redacted)),
        "secret_source": Key(None, None),  # shown within "secret"
        "enabled": Key(None, as_is),
        "path": Key(parse_hints_path),
        "tolerance": Key(duration_between(MIN_HINT_TOLERANCE, MAX_HINT_TOLERANCE), format_duration),
    },
}

WEBHOOK_KEYS: Mapping[str, Key] = {
    "name": Key(parse_webhook_name),
    "url": Key(parse_webhook_url_or_reference, builds=True, shown_from="display_url"),
    "events": Key(parse_events, lambda v: sorted(e.value for e in v), is_collection=True),
    "secret_env": source_key(),
    "secret_file": source_key(),
    "secret": Key(None, redacted),
    "signature": Key(choice_parser(SCHEMES), builds=True),
    "previous_secrets_env": Key(parse_str_list, None, builds=True, is_collection=True),
    "previous_secrets": Key(None, if_set(lambda secrets: [redacted(s) for s in secrets])),
    "timeout": duration_key(),
    "connect_timeout": duration_key(),
    "retry": Key(parse_retry_table, None, builds=True, is_collection=True),
    "ca_bundle": Key(parse_nonempty_str, if_set(as_is)),
    "format": Key(choice_parser(FORMATS)),
    "models": globs_key(),
    "to_stages": Key(parse_stages, unless_none(sorted), is_collection=True),
    "aliases": Key(parse_globs, unless_none(listed), is_collection=True),
    "event_type": Key(parse_event_type, if_set(as_is)),
    "ref": Key(parse_nonempty_str, for_format="gitlab"),
    "template": Key(parse_nonempty_str, None, builds=True),
    "template_file": source_key(),
    "content_type": Key(parse_nonempty_str, if_set(as_is)),
    "headers": Key(
        parse_headers, if_set(lambda h: [n for n, _ in h]), builds=True, is_collection=True
    ),
    "username": Key(parse_nonempty_str, if_set(as_is)),
    "password_env": source_key(),
    "password_file": source_key(),
}

WEBHOOK_SHOWN = (
    "name",
    "url",
    "events",
    "format",
    "models",
    "to_stages",
    "aliases",
    "event_type",
    "ref",
    "content_type",
    "secret",
    "signature",
    "previous_secrets",
    "headers",
    "username",
    "timeout",
    "connect_timeout",
    "ca_bundle",
)
"""The order check-config shows a webhook's keys in: what it is, then how it is sent (its
``retry`` table follows when it differs from ``[delivery]``'s)."""


def readable(keys: Mapping[str, Key]) -> Iterator[tuple[str, Key]]:
    """The keys a config file may set (not those only shown)."""
    return ((name, key) for name, key in keys.items() if key.parse is not None)


def lookup(keys: Mapping[str, Key], name: str) -> str | None:
    """The current name of a readable key given by its name or its old name, or None."""
    if name in keys and keys[name].parse is not None:
        return name
    return next((new for new, key in keys.items() if key.old_name == name), None)


def parse_table(
    table: Mapping[str, Any], keys: Mapping[str, Key], path: str, problems: Problems
) -> dict[str, Any]:
    """The table's values parsed, by current key name; each bad or unknown key a problem."""
    values: dict[str, Any] = {}
    expected = ", ".join(name for name, _ in readable(keys))
    for given, value in table.items():
        name = lookup(keys, given)
        if name is None:
            problems.note(f"{path}.{given}", f"unknown key; expected one of {expected}")
            continue
        if name != given and _renamed(table, given, name, path, problems):
            continue
        parse = keys[name].parse
        assert parse is not None
        try:
            values[name] = parse(value)
        except Invalid as exc:
            problems.add(f"{path}.{given}", value if exc.shown is None else exc.shown, str(exc))
    return values


def _renamed(table: Mapping[str, Any], old: str, new: str, path: str, problems: Problems) -> bool:
    """An old key name: warned about, or a problem if the new one is there too (True)."""
    section = path if "[" in path or "." in path else f"[{path}]"
    if new in table:
        problems.note(f"{path}.{old}", f"and {path}.{new} are the same key; set only {new}")
        return True
    problems.warnings.append(f"{section} {old} is deprecated; use {new}")
    return False
