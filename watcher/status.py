"""What `mlflow-watcher status` reports, read from the state file: the last poll, what is
tracked, the scan cadences and the outbox.

Built from the state alone (meta keys and outbox counts), so it is right for a running daemon,
for the last ``run --once`` and for a stopped watcher alike.
"""

from __future__ import annotations

from typing import Any

from watcher import state_meta as sm
from watcher.config import Config
from watcher.store import DEAD, DELIVERED, PENDING, Store


def status_report(config: Config, store: Store, now: float) -> dict[str, Any]:
    """The status as one JSON-ready dict (``status --json`` prints it as it is)."""
    meta = store.all_meta()
    summary = store.summary()
    webhooks = sorted({*(w.name for w in config.webhooks), *summary.counts})
    by_webhook = {
        name: {
            status: summary.counts.get(name, {}).get(status, 0)
            for status in (PENDING, DEAD, DELIVERED)
        }
        for name in webhooks
    }
    oldest = summary.oldest_pending
    return {
        "state": store.location,
        "registry": sm.REGISTRY.get(meta),
        "last_poll": _last_poll(meta, now),
        "models": sm.MODELS.get(meta),
        "versions": sm.VERSIONS.get(meta),
        "scans": {
            scan: {"every_s": sm.SCAN_EVERY[scan].get(meta), "took_s": sm.SCAN_TOOK[scan].get(meta)}
            for scan in sm.SCANS
        },
        "baseline_at": _time_text(sm.BASELINE_AT.get(meta)),
        "deliveries": by_webhook,
        "pending": summary.total(PENDING),
        "dead": summary.total(DEAD),
        "oldest_pending": {
            "queued_at": _time_text(oldest),
            "age_s": _seconds_since(oldest, now),
            "by_webhook": {
                name: sm.format_time(at)
                for name, at in sorted(summary.oldest_pending_by_webhook.items())
            },
        },
    }


def _last_poll(meta: dict[str, str], now: float) -> dict[str, Any]:
    """When the last poll ran, how it went, and the last one that went well."""
    at = sm.LAST_POLL_AT.get(meta)
    return {
        "at": _time_text(at),
        "result": sm.LAST_POLL_RESULT.get(meta),
        "duration_ms": sm.LAST_POLL_DURATION_MS.get(meta),
        "error": sm.LAST_POLL_ERROR.get(meta) or None,
        "last_ok_at": _time_text(sm.LAST_POLL_OK_AT.get(meta)),
        "age_s": _seconds_since(at, now),
    }


def _time_text(at: float | None) -> str | None:
    return None if at is None else sm.format_time(at)


def _seconds_since(at: float | None, now: float) -> int | None:
    return None if at is None else max(0, round(now - at))
