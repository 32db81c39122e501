"""One cycle: read -> detect -> commit -> (deliver). Returns a report with counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from watcher.config import Config
from watcher.detect import Policy, detect, snapshot_delta
from watcher.errors import RegistryError, StoreError
from watcher.model import Event, Observation, make_delivery_id
from watcher.registry import (
    Reader,
    ReaderSettings,
    confirm_missing,
    open_reader,
    registry_identity,
)
from watcher.store import NewDelivery, Store


@dataclass
class CycleReport:
    ok: bool
    duration_ms: float
    baseline: bool = False
    models: int = 0
    versions: int = 0
    events: list[Event] = field(default_factory=list)
    queued: int = 0
    error: str | None = None


def reader_settings(config: Config) -> ReaderSettings:
    return ReaderSettings(
        tracking_uri=config.mlflow.tracking_uri,
        registry_uri=config.mlflow.effective_registry_uri,
        timeout=config.mlflow.timeout,
        page_size=config.mlflow.page_size,
    )


class Pipeline:
    """Holds what lives across cycles: the reader and the last committed snapshot."""

    def __init__(
        self,
        config: Config,
        store: Store,
        log: Any,
        *,
        emit_existing: bool = False,
        reader_factory: Callable[[ReaderSettings], Reader] = open_reader,
    ) -> None:
        self.config = config
        self.store = store
        self.log = log
        self.registry = registry_identity(config.mlflow.effective_registry_uri)
        self.policy = Policy(registry=self.registry, emit_existing=emit_existing)
        self._reader_factory = reader_factory
        self._reader: Reader | None = None
        self._snapshot: Observation | None = None
        self._snapshot_loaded = False

    def check_registry_matches(self) -> None:
        """Refuse a state file recorded for another registry: its diff would be nonsense."""
        recorded = self.store.get_meta("registry")
        if recorded is not None and recorded != self.registry:
            raise StoreError(
                f"state file {str(self.store.path)!r} holds the snapshot of registry {recorded}, "
                f"not {self.registry}; use a separate [state] path for each registry"
            )

    def _previous(self) -> Observation | None:
        if not self._snapshot_loaded:
            self._snapshot = self.store.load_snapshot()
            self._snapshot_loaded = True
        return self._snapshot

    def read(self) -> Observation:
        """A complete, confirmed observation, or RegistryError."""
        if self._reader is None:
            self._reader = self._reader_factory(reader_settings(self.config))
        current = self._reader.read(self.config.watch.watches)
        previous = self._previous()
        if previous is None:
            return current
        missing_models = [n for n in previous.models if n not in current.models]
        missing_versions = [k for k in previous.versions if k not in current.versions]
        if not missing_models and not missing_versions:
            return current
        found_models, found_versions = confirm_missing(
            self._reader, missing_models, missing_versions
        )
        if found_models or found_versions:
            self.log.info(
                "poll.scan_gap",
                models=len(found_models),
                versions=len(found_versions),
                reason="the scan missed rows that still exist (paging under concurrent writes)",
            )
        return Observation(
            models={**current.models, **found_models},
            versions={**current.versions, **found_versions},
            read_at=current.read_at,
        )

    def run_cycle(self, *, dry_run: bool = False) -> CycleReport:
        started = time.monotonic()
        try:
            current = self.read()
        except RegistryError as exc:
            report = CycleReport(ok=False, duration_ms=_ms(started), error=str(exc))
            self.log.warning("poll.failed", error=str(exc), duration_ms=round(report.duration_ms))
            if not dry_run:
                self.store.set_meta(
                    {
                        "last_poll_at": _now_iso(),
                        "last_poll_result": "failed",
                        "last_poll_error": str(exc),
                        "last_poll_duration_ms": str(round(report.duration_ms)),
                    }
                )
            return report

        previous = self._previous()
        baseline_ms = int(self.store.get_meta("baseline_read_at") or 0)
        events = detect(previous, current, replace(self.policy, baseline_ms=baseline_ms))
        report = CycleReport(
            ok=True,
            duration_ms=0.0,
            baseline=previous is None,
            models=len(current.models),
            versions=len(current.versions),
            events=events,
        )
        if dry_run:
            report.duration_ms = _ms(started)
            return report

        deliveries = [
            NewDelivery(make_delivery_id(e.event_id, w.name), e.event_id, w.name, e.model_name)
            for e in events
            for w in self.config.webhooks
            if w.wants(e)
        ]
        meta = {
            "registry": self.registry,
            "snapshot_read_at": str(current.read_at),
            "last_poll_at": _now_iso(),
            "last_poll_ok_at": _now_iso(),
            "last_poll_result": "ok",
            "last_poll_error": "",
            "models": str(report.models),
            "versions": str(report.versions),
        }
        if previous is None:
            meta["baseline_at"] = _now_iso()
            meta["baseline_read_at"] = str(current.read_at)
        report.duration_ms = _ms(started)
        meta["last_poll_duration_ms"] = str(round(report.duration_ms))
        report.queued = self.store.commit_cycle(
            snapshot_delta(previous, current), events, deliveries, meta
        )
        self._snapshot = current
        if previous is None:
            self.log.info(
                "poll.baseline",
                models=report.models,
                versions=report.versions,
                events=len(events),
                note="first cycle: recorded what exists"
                + (" and emitted it" if self.policy.emit_existing else "; nothing emitted"),
            )
        self.log.info(
            "poll.finished",
            duration_ms=round(report.duration_ms),
            models=report.models,
            versions=report.versions,
            events=len(events),
            queued=report.queued,
        )
        return report


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
