"""How the pages write times, ages, latencies and bodies: Jinja filters, plain text (the
templates escape it)."""

from __future__ import annotations

import json

from flask import Flask

from watcher import state_meta as sm


def utc(at: float | None) -> str:
    """Unix time as UTC ISO text, the form the state and ``status`` use."""
    return "-" if at is None else sm.format_time(at)


def age(seconds: float | None) -> str:
    """A duration for a person: ``45s``, ``12m``, ``3h``, ``2d``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def pretty_body(body: str | None) -> str:
    """A JSON body indented (keys in their order), anything else as it is."""
    if body is None:
        return ""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        utc=utc, age=age, millis=millis, percent=percent, pretty_body=pretty_body
    )
