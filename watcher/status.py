"""What `mlflow-watcher status` reports, read from the state: the last poll, what is tracked,
the scan cadences, the outbox and, on a shared (PostgreSQL) state, the leader lease.

Built from the state alone (meta keys, outbox counts, the lease row), so it is right for a
running daemon, for the last ``run --once`` and for a stopped watcher alike. A ``status``
process is no replica: it shows the lease as the database records it (who leads, with which
epoch, until when), not a role of its own. A SQLite state has no lease (one process holds its
file lock), so its ``lease`` is null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from watcher import state_meta as sm
from watcher.config import Config
from watcher.store import DEAD, DELIVERED, PENDING, LeaseInfo, Store


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
    lease = None
    if config.state.shared:
        lease = lease_status(store.lease_info(), store.lease_takeovers(), config.state.namespace)
    return {
        "state": store.location,
        "backend": store.backend.kind,
        "lease": lease,
        "registry": sm.REGISTRY.get(meta),
        "last_poll": _last_poll(meta, now),
        "models": sm.MODELS.get(meta),
        "prompts": sm.PROMPTS.get(meta),
        "prompt_versions": sm.PROMPT_VERSIONS.get(meta),
        "versions": sm.VERSIONS.get(meta),
        "scans": {
            scan: {"every_s": sm.SCAN_EVERY[scan].get(meta), "took_s": sm.SCAN_TOOK[scan].get(meta)}
            for scan in sm.SCANS
        },
        "hot": {"models": sm.HOT_MODELS.get(meta), "round_s": sm.HOT_ROUND_S.get(meta)},
        "baseline_at": _time_text(sm.BASELINE_AT.get(meta)),
        "hints": hints_status(config, meta, now),
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


def hints_status(config: Config, meta: dict[str, str], now: float) -> dict[str, Any]:
    """Whether hints (MLflow's native webhooks) are on, when the daemon last accepted one,
    and its counts by result since it started (as of its last poll)."""
    last = sm.LAST_HINT_AT.get(meta)
    return {
        "on": config.hints.enabled,
        "path": config.hints.path if config.hints.enabled else None,
        "last_accepted_at": _time_text(last),
        "age_s": _seconds_since(last, now),
        "counts": {result: sm.HINTS_COUNT[result].get(meta) or 0 for result in sm.HINT_RESULTS},
    }


def lease_status(info: LeaseInfo, takeovers: int, namespace: str) -> dict[str, Any]:
    """The lease of a shared state: the leader (None while nobody holds an unexpired lease),
    the epoch (the leader's, or the last one granted), since and until when, and how many
    times a replica took the lease in this namespace."""
    return {
        "namespace": namespace,
        "leader": info.holder if info.valid else None,
        "epoch": info.epoch,
        "acquired_at": _datetime_text(info.acquired_at) if info.valid else None,
        "expires_at": _datetime_text(info.expires_at) if info.valid else None,
        "takeovers": takeovers,
    }


def _datetime_text(at: datetime | None) -> str | None:
    return None if at is None else sm.format_time(at.timestamp())


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
