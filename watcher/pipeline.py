"""One cycle: read -> detect -> commit -> (deliver). Returns a report with counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from watcher.config import Config
from watcher.detect import Policy, detect, snapshot_delta
from watcher.errors import RegistryError, StoreError
from watcher.incremental import IncrementalReader, Plan, Runner, thread_runner
from watcher.model import Event, Observation, make_delivery_id
from watcher.registry import (
    Progress,
    Reader,
    ReaderSettings,
    ReadStats,
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
    skipped: bool = False
    """No read was tried: MLflow failed the same way just before, and the poll backs off."""
    kind: str = ""
    """How the registry was read: "full", or "incremental" plus any full scans it included."""
    requests: int = 0
    bytes_read: int = 0
    mlflow_ms: float = 0.0
    """Time spent waiting for MLflow (the rest of duration_ms is the watcher's own work)."""


def reader_settings(config: Config) -> ReaderSettings:
    return ReaderSettings(
        tracking_uri=config.mlflow.tracking_uri,
        registry_uri=config.mlflow.effective_registry_uri,
        timeout=config.mlflow.timeout,
        page_size=config.mlflow.page_size,
    )


class Pipeline:
    """Holds what lives across cycles: the reader, the last committed snapshot, the read plan."""

    def __init__(
        self,
        config: Config,
        store: Store,
        log: Any,
        *,
        emit_existing: bool = False,
        reader_factory: Callable[[ReaderSettings], Reader] = open_reader,
        progress: Progress | None = None,
        always_full: bool = False,
        background_scans: bool = False,
        scan_runner: Runner = thread_runner,
    ) -> None:
        self.config = config
        self.store = store
        self.log = log
        self.registry = registry_identity(config.mlflow.effective_registry_uri)
        self.policy = Policy(registry=self.registry, emit_existing=emit_existing)
        self._reader_factory = reader_factory
        self._reader: Reader | None = None
        self._progress = progress
        self.always_full = always_full
        """run --once and --dry-run: every cycle reads everything (cron runs are rare, and must
        not miss a tag change waiting for a cadence)."""
        self._snapshot: Observation | None = None
        self._snapshot_loaded = False
        self._baseline_ms: int | None = None
        """When the baseline was read (state meta baseline_read_at), read once."""
        watch = config.watch
        # background_scans (the daemon): slow full scans run on a thread with a reader of their
        # own, so a poll never waits for one (a transition is not held up by a 13 s scan).
        self.incremental = IncrementalReader(
            watch.watches,
            watch.interval,
            watch.models_interval,
            watch.full_scan_interval,
            watch.max_duty,
            log,
            scan_reader=(lambda: reader_factory(reader_settings(config)))
            if background_scans
            else None,
            runner=scan_runner if background_scans else None,
        )
        self._cadences: dict[str, float] = {}
        self._failures = FailureStreak(config.watch.interval)

    def check_registry_matches(self) -> None:
        """Refuse a state file recorded for another registry: its diff would be nonsense."""
        recorded = self.store.get_meta("registry")
        if recorded is not None and recorded != self.registry:
            raise StoreError(
                f"state file {str(self.store.path)!r} holds the snapshot of registry {recorded}, "
                f"not {self.registry}; use a separate [state] path for each registry"
            )

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = self._reader_factory(reader_settings(self.config))
            self._reader.progress = self._progress
        return self._reader

    def _previous(self) -> Observation | None:
        if not self._snapshot_loaded:
            self._snapshot = self.store.load_snapshot()
            self._snapshot_loaded = True
        return self._snapshot

    def read(self, *, full: bool = False, plan: Plan | None = None) -> Observation:
        """A complete, confirmed observation, or RegistryError: everything when ``full`` (or
        always_full), otherwise the cheapest read the cadences allow (the reader decides)."""
        plan = plan if plan is not None else Plan()
        return self.incremental.observe(
            self.reader, self._previous(), plan, everything=full or self.always_full
        )

    def run_cycle(self, *, dry_run: bool = False, full: bool = False) -> CycleReport:
        started = time.monotonic()
        if self._failures.waiting(started):
            # MLflow keeps failing the same way: poll less often until it answers again.
            return CycleReport(
                ok=False, duration_ms=0.0, error=self._failures.last_error, skipped=True
            )
        plan = Plan()
        before = self._reader.stats.copy() if self._reader is not None else ReadStats()
        try:
            current = self.read(full=full, plan=plan)
        except RegistryError as exc:
            report = CycleReport(ok=False, duration_ms=_ms(started), error=str(exc))
            self._add_costs(report, before)
            count = self._failures.failed(str(exc), time.monotonic())
            if _is_power_of_two(count):  # the 1st, 2nd, 4th, 8th... of a run of the same error
                self.log.warning(
                    "poll.failed",
                    error=str(exc),
                    duration_ms=round(report.duration_ms),
                    **({"repeated": count} if count > 1 else {}),
                    **({"next_poll_in_s": round(self._failures.delay, 1)} if count > 1 else {}),
                )
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

        failed_before = self._failures.recovered()
        if failed_before:
            self.log.info("poll.recovered", failed_polls=failed_before)
        previous = self._previous()
        if self._baseline_ms is None:
            self._baseline_ms = int(self.store.get_meta("baseline_read_at") or 0)
        policy = replace(self.policy, baseline_ms=self._baseline_ms)
        events = detect(previous, current, policy, plan.changed_versions)
        report = CycleReport(
            ok=True,
            duration_ms=0.0,
            baseline=previous is None,
            models=len(current.models),
            versions=len(current.versions),
            events=events,
            kind="+".join(plan.kinds),
        )
        self._add_costs(report, before)
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
        if not self.always_full:  # a daemon's cadences; --once reads everything every time
            meta.update(self.incremental.scan_meta())
        if previous is None:
            meta["baseline_at"] = _now_iso()
            meta["baseline_read_at"] = str(current.read_at)
        delta = snapshot_delta(previous, current, plan.changed_versions)
        report.duration_ms = _ms(started)
        meta["last_poll_duration_ms"] = str(round(report.duration_ms))
        report.queued = self.store.commit_cycle(delta, events, deliveries, meta)
        self.incremental.committed(previous, current, delta)
        self._snapshot = current
        if previous is None:
            self._baseline_ms = current.read_at
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
            read=report.kind,
            requests=report.requests,
            models=report.models,
            versions=report.versions,
            events=len(events),
            queued=report.queued,
        )
        cadences = self.incremental.cadences()
        if _changed_much(self._cadences, cadences):
            self.log.info("poll.cadence", **cadences, max_duty=self.config.watch.max_duty)
            self._cadences = cadences
        return report

    def _add_costs(self, report: CycleReport, before: ReadStats) -> None:
        if self._reader is None:
            return
        spent = self._reader.stats.since(before)
        report.requests = spent.requests
        report.bytes_read = spent.bytes
        report.mlflow_ms = spent.seconds * 1000


MAX_FAILURE_BACKOFF = 30.0
"""Seconds between polls, at most, while MLflow keeps failing the same way."""


class FailureStreak:
    """Consecutive identical poll failures: the log says it once (then at 2, 4, 8...), and
    polls back off exponentially up to MAX_FAILURE_BACKOFF, never below the interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.count = 0
        self.last_error = ""
        self.delay = 0.0
        self._until = 0.0

    def waiting(self, now: float) -> bool:
        return self.count > 1 and now < self._until

    def failed(self, error: str, now: float) -> int:
        self.count = self.count + 1 if error == self.last_error else 1
        self.last_error = error
        ceiling = max(self.interval, MAX_FAILURE_BACKOFF)
        self.delay = min(ceiling, self.interval * 2 ** (self.count - 1))
        self._until = now + self.delay - self.interval  # the scheduler adds one interval
        return self.count

    def recovered(self) -> int:
        count, self.count, self.last_error = self.count, 0, ""
        return count


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _changed_much(old: dict[str, float], new: dict[str, float]) -> bool:
    """Log a cadence when it first appears or moves by more than a fifth."""
    return not old or any(abs(new[k] - old.get(k, 0)) > 0.2 * max(new[k], 1e-9) for k in new)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
