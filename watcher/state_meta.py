"""The state file's meta keys, each defined once: its name, its type, how it is written, how it
is read back.

The state keeps small facts beside the snapshot and the outbox (the last poll, what is tracked,
the scan cadences) as text in a key/value table. Writers (the pipeline, the incremental reader,
the service, the store) and readers (`status`, the /metrics gauges, the store) all go through
the keys here, so a key cannot be spelt or parsed two ways. A value that does not parse reads
as None, as an absent one does.
"""

from __future__ import annotations

import time
from calendar import timegm
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(at: float) -> str:
    """Unix time as the state writes it: ``2025-01-31T12:00:00Z``."""
    return time.strftime(TIME_FORMAT, time.gmtime(at))


def parse_time(value: str | None) -> float | None:
    """The state's ``2025-01-31T12:00:00Z`` timestamps as Unix time (None if absent or bad)."""
    if not value:
        return None
    try:
        return float(timegm(time.strptime(value, TIME_FORMAT)))
    except ValueError:
        return None


def parse_float(value: str | None) -> float | None:
    """A number the state keeps as text (None if absent or not a number)."""
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _parse_count(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _parse_text(value: str) -> str | None:
    return value


@dataclass(frozen=True)
class MetaKey(Generic[T]):
    """One meta key: ``encode`` turns a value into the stored text, ``decode`` back (None when
    the text does not parse)."""

    name: str
    encode: Callable[[T], str]
    decode: Callable[[str], T | None]

    def get(self, meta: Mapping[str, str]) -> T | None:
        """The value in ``meta`` (as read with ``Store.all_meta``), None if absent or bad."""
        text = meta.get(self.name)
        return None if text is None else self.decode(text)

    def entry(self, value: T) -> tuple[str, str]:
        """A (name, text) pair for ``Store.set_meta`` / ``Store.commit_cycle``."""
        return self.name, self.encode(value)


def _text(name: str) -> MetaKey[str]:
    return MetaKey(name, str, _parse_text)


def _count(name: str) -> MetaKey[int]:
    return MetaKey(name, str, _parse_count)


def _time(name: str) -> MetaKey[float]:
    """A wall-clock time, written to the second as ISO 8601 UTC."""
    return MetaKey(name, format_time, parse_time)


def _seconds(name: str) -> MetaKey[float]:
    return MetaKey(name, lambda s: str(round(s, 3)), parse_float)


def meta(*entries: tuple[str, str]) -> dict[str, str]:
    """The entries of one write, as ``Store.set_meta`` takes them."""
    return dict(entries)


# What was read, and from where.
REGISTRY = _text("registry")
"""The registry the snapshot belongs to (credentials removed): a state file serves one."""
SNAPSHOT_READ_AT = _count("snapshot_read_at")
"""When the committed snapshot was read: the registry's clock, milliseconds."""
BASELINE_AT = _time("baseline_at")
"""When the first (baseline) cycle was committed; absent until then."""
BASELINE_READ_AT = _count("baseline_read_at")
"""When the baseline was read: the registry's clock, milliseconds (what existed before it is
not announced as created)."""
PROMPTS_SINCE = _count("prompts_since")
"""When the snapshot began to hold MLflow 3's prompts (the registry's clock, milliseconds): a
webhook subscribed to prompt events. 0 or absent: it holds none. The poll that starts (or
stops) reading prompts reads everything and adopts them silently."""
MODELS = _count("models")
"""Registered models watched, as of the last good poll."""
VERSIONS = _count("versions")
"""Model versions watched, as of the last good poll."""
PROMPTS = _count("prompts")
"""MLflow 3 prompts watched (a webhook subscribes to prompt events), as of the last good poll;
not among MODELS."""
PROMPT_VERSIONS = _count("prompt_versions")
"""Their versions, as of the last good poll; not among VERSIONS."""

# The last poll.
LAST_POLL_AT = _time("last_poll_at")
LAST_POLL_OK_AT = _time("last_poll_ok_at")
LAST_POLL_RESULT = _text("last_poll_result")
"""POLL_OK or POLL_FAILED."""
LAST_POLL_ERROR = _text("last_poll_error")
"""The failed poll's error; empty after a good one."""
LAST_POLL_DURATION_MS = _count("last_poll_duration_ms")
POLL_OK, POLL_FAILED = "ok", "failed"

# The daemon's scan cadences, written by IncrementalReader.scan_meta().
SCANS = ("models", "versions")
SCAN_EVERY = {scan: _seconds(f"{scan}_scan_every_s") for scan in SCANS}
"""Time between scans, as configured or chosen by auto."""
SCAN_TOOK = {scan: _seconds(f"{scan}_scan_took_s") for scan in SCANS}
"""How long the last scan took."""

# The hot set, written by IncrementalReader.scan_meta().
HOT_MODELS = _count("hot_models")
"""Models with recent activity, read with the polls (0: none, or the hot set is off)."""
HOT_ROUND_S = _seconds("hot_round_s")
"""Seconds until every hot model has been read once: one interval unless read in rotation."""

READY_CHECKED_AT = _time("ready_checked_at")
"""When /readyz last proved the state writable (the write is the check)."""

# Hints (MLflow's native webhooks), as the daemon counted them: written after each poll.
HINT_RESULTS: tuple[Literal["accepted", "replayed", "forged", "invalid"], ...] = (
    "accepted",
    "replayed",
    "forged",
    "invalid",
)
HINTS_COUNT = {result: _count(f"hints_{result}") for result in HINT_RESULTS}
"""Hints received by the running daemon since it started, by result."""
LAST_HINT_AT = _time("last_hint_at")
"""When the daemon last accepted a hint."""
