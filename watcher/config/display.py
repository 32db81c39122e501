"""What ``check-config`` shows: the configuration as it will be used, walked from the key
tables (:mod:`watcher.config.keys`), secrets redacted, durations as strings; and a TOML writer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from watcher.config.keys import OMIT, RETRY_KEYS, SECTIONS, WEBHOOK_KEYS, WEBHOOK_SHOWN, Key
from watcher.config.types import Config, RetryPolicy, WebhookConfig


def effective_config(config: Config) -> dict[str, Any]:
    """The configuration as it will be used, secrets redacted, durations as strings."""
    shown: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        if section == "delivery":
            shown[section] = {
                **_table(RETRY_KEYS, config.delivery.retry),
                **_table({k: v for k, v in keys.items() if k not in RETRY_KEYS}, config.delivery),
            }
        else:
            shown[section] = _table(keys, getattr(config, section))
    shown["webhooks"] = [_webhook(w, config.delivery.retry) for w in config.webhooks]
    return shown


def _table(keys: Mapping[str, Key], owner: object) -> dict[str, Any]:
    """The keys of one section as shown, in table order, the unset optional ones left out."""
    shown = {name: key.shown(name, owner) for name, key in keys.items() if key.show is not None}
    return {name: value for name, value in shown.items() if value is not OMIT}


def _webhook(webhook: WebhookConfig, default_retry: RetryPolicy) -> dict[str, Any]:
    keys = {
        name: WEBHOOK_KEYS[name]
        for name in WEBHOOK_SHOWN
        if WEBHOOK_KEYS[name].for_format in (None, webhook.format)
    }
    shown = _table(keys, webhook)
    if webhook.retry != default_retry:
        shown["retry"] = _table(RETRY_KEYS, webhook.retry)
    return shown


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
