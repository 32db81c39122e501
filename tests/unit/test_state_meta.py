"""The state's meta keys: what a writer stores is what a reader gets back, and a value that
does not parse reads as absent instead of breaking `status` or a scrape."""

from __future__ import annotations

import pytest

from watcher import state_meta as sm


def test_each_kind_of_key_reads_back_what_was_written() -> None:
    meta = sm.meta(
        sm.REGISTRY.entry("http://mlflow:5000"),
        sm.MODELS.entry(12),
        sm.LAST_POLL_AT.entry(1767323045.0),
        sm.SCAN_EVERY["versions"].entry(214.0004),
    )
    assert meta == {
        "registry": "http://mlflow:5000",
        "models": "12",
        "last_poll_at": "2026-01-02T03:04:05Z",
        "versions_scan_every_s": "214.0",
    }
    assert sm.REGISTRY.get(meta) == "http://mlflow:5000"
    assert sm.MODELS.get(meta) == 12
    assert sm.LAST_POLL_AT.get(meta) == 1767323045.0
    assert sm.SCAN_EVERY["versions"].get(meta) == 214.0


def test_a_time_is_written_to_the_second() -> None:
    assert sm.LAST_POLL_OK_AT.entry(1767323045.9) == ("last_poll_ok_at", "2026-01-02T03:04:05Z")


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (sm.MODELS, "twelve"),
        (sm.LAST_POLL_DURATION_MS, "-5"),
        (sm.BASELINE_AT, "yesterday"),
        (sm.SCAN_TOOK["models"], "fast"),
    ],
)
def test_a_value_that_does_not_parse_reads_as_absent(key: sm.MetaKey[object], text: str) -> None:
    assert key.get({key.name: text}) is None
    assert key.get({}) is None


def test_the_scan_keys_keep_the_names_existing_state_files_have() -> None:
    assert [k.name for k in sm.SCAN_EVERY.values()] == [
        "models_scan_every_s",
        "versions_scan_every_s",
    ]
    assert [k.name for k in sm.SCAN_TOOK.values()] == ["models_scan_took_s", "versions_scan_took_s"]
