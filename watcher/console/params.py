"""The query parameters of the pages, parsed: a bad value is a 400 whose message names the
field and the value, never a page that silently shows something else."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime

from werkzeug.exceptions import BadRequest

from watcher.config import event_by_name, parse_duration
from watcher.config.parsers import Invalid
from watcher.store import DEAD, DELIVERED, PENDING, DeliveryFilter

STATUSES = (PENDING, DELIVERED, DEAD)
MAX_TEXT = 200
"""Longest webhook or model name a filter takes (model names are free text in MLflow)."""


def bad(field: str, value: str, expected: str) -> BadRequest:
    return BadRequest(f"{field}: got {value[:80]!r}, expected {expected}")


def text(args: Mapping[str, str], field: str) -> str | None:
    value = args.get(field, "").strip()
    if len(value) > MAX_TEXT:
        raise bad(field, value, f"at most {MAX_TEXT} characters")
    return value or None


def moment(args: Mapping[str, str], field: str, now: float) -> float | None:
    """A time: ISO 8601 (UTC unless it says otherwise), or a duration meaning that long ago
    (``since=1h``)."""
    value = args.get(field, "").strip()
    if not value:
        return None
    with contextlib.suppress(Invalid):
        return now - parse_duration(value)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad(
            field, value, 'a UTC time such as 2025-01-31T12:00:00Z, or a duration such as "1h"'
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def cursor(args: Mapping[str, str], field: str) -> int | None:
    value = args.get(field, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise bad(field, value, "a positive whole number (the next page's cursor)")
    return int(value)


def stamp(args: Mapping[str, str], field: str) -> float | None:
    """A Unix time cursor (the events page's next page)."""
    value = args.get(field, "").strip()
    if not value:
        return None
    try:
        at = float(value)
    except ValueError:
        raise bad(field, value, "a Unix time (the next page's cursor)") from None
    if not 0 <= at < 1e11:
        raise bad(field, value, "a Unix time (the next page's cursor)")
    return at


def delivery_filters(args: Mapping[str, str], now: float) -> DeliveryFilter:
    status = text(args, "status")
    if status is not None and status not in STATUSES:
        raise bad("status", status, f"one of {', '.join(STATUSES)}")
    event_name = text(args, "event")
    event_type = None
    if event_name is not None:
        found = event_by_name(event_name)
        if found is None:
            raise bad("event", event_name, "an event type such as MODEL_VERSION_CREATED")
        event_type = found.value
    return DeliveryFilter(
        webhook=text(args, "webhook"),
        model=text(args, "model"),
        event_type=event_type,
        status=status,
        since=moment(args, "since", now),
        until=moment(args, "until", now),
    )
