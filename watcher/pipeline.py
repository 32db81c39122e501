"""One cycle: read -> detect -> commit -> (deliver).

A cycle is observed first (read the registry, compare it with the last committed snapshot,
detect the events: nothing is written), then committed (the snapshot change, the events, their
outbox rows and the state meta, in one transaction). A dry run only observes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from watcher import state_meta as sm
from watcher.config import Config
from watcher.detect import Policy, detect, snapshot_delta
from watcher.errors import RegistryError, StoreError
from watcher.experiments import Experiments
from watcher.hints import HintBox
from watcher.incremental import IncrementalReader, Plan, Runner
from watcher.model import Event, Observation, make_delivery_id
from watcher.prompts import is_prompt
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
    prompts: int = 0
    prompt_versions: int = 0
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
    hot_ms: float = 0.0
    """Of that, the hot set's reads (watcher.hotset)."""


@dataclass
class Cycle:
    """One poll observed, nothing written yet: what was read, what it was compared with, and
    the events that follow. ``Pipeline.commit`` writes it; a dry run stops here."""

    report: CycleReport
    started: float
    """time.monotonic() when the poll started: the commit's duration counts from here."""
    full: bool
    """Everything was read on request (``run --once``, ``--dry-run``), not as cadences allow."""
    previous: Observation | None = None
    current: Observation | None = None
    """None when the read failed or was skipped."""
    plan: Plan = field(default_factory=Plan)


@dataclass(frozen=True)
class PipelineOptions:
    """What differs between the modes (daemon, ``run --once``, ``--dry-run``)."""

    emit_existing: bool = False
    """On the first cycle, emit events for what exists instead of a silent baseline."""
    progress: Progress | None = None
    """Told how far a long full read got (a terminal shows it)."""
    scan_runner: Runner | None = None
    """The daemon's: slow scans run there with a reader of their own, so a poll never waits
    for one (a transition is not held up by a 13 s scan). None: scans run in the poll."""
    hints: HintBox | None = None
    """The daemon's, with ``[hints]``: verified hints from MLflow, see ``Pipeline.hinted``."""


def reader_settings(config: Config) -> ReaderSettings:
    return ReaderSettings(
        tracking_uri=config.mlflow.tracking_uri,
        registry_uri=config.mlflow.effective_registry_uri,
        timeout=config.mlflow.timeout,
        page_size=config.mlflow.page_size,
        workspace=config.mlflow.workspace,
        prompts=config.watches_prompts,
    )


class Pipeline:
    """Holds what lives across cycles: the reader, the last committed snapshot, the read plan."""

    def __init__(
        self,
        config: Config,
        store: Store,
        log: Any,
        options: PipelineOptions | None = None,
        *,
        reader_factory: Callable[[ReaderSettings], Reader] = open_reader,
    ) -> None:
        options = options or PipelineOptions()
        self.config = config
        self.store = store
        self.log = log
        self.registry = registry_identity(config.mlflow.effective_registry_uri)
        self.policy = Policy(registry=self.registry, emit_existing=options.emit_existing)
        self._reader_factory = reader_factory
        self._reader: Reader | None = None
        self._progress = options.progress
        self._snapshot: Observation | None = None
        self._snapshot_loaded = False
        self._baseline_ms: int | None = None
        """When the baseline was read (state meta baseline_read_at), read once."""
        self._prompts_held: bool | None = None
        """Whether the committed snapshot holds the prompts (state meta prompts_since)."""
        self._scan_runner = options.scan_runner
        self.hinted = options.hints
        """With ``[hints]`` (the daemon only): ``hinted.take()`` gives the names of the models
        MLflow's native webhooks named since the last take, each verified, to be read now.
        A name is only a reason to read: the poll's reads stay the source of truth."""
        self.incremental = self._new_incremental()
        self._cadences: dict[str, float] = {}
        self._failures = FailureStreak(config.watch.interval)
        self.experiments = Experiments(log)
        """The experiment of each event's run (one request per run, then remembered)."""

    def _new_incremental(self) -> IncrementalReader:
        config, watch, runner = self.config, self.config.watch, self._scan_runner
        reader_factory = self._reader_factory
        return IncrementalReader(
            watch.watches,
            watch.interval,
            watch.models_scan_interval,
            watch.versions_scan_interval,
            watch.max_duty,
            self.log,
            scan_reader=(lambda: reader_factory(reader_settings(config)))
            if runner is not None
            else None,
            runner=runner,
            hot_window=watch.hot_window,
        )

    def resume(self) -> None:
        """Forget what this process remembered of the registry, as a restart would: another
        replica may have led (and committed) since. The next poll starts from the committed
        snapshot."""
        self._snapshot = None
        self._snapshot_loaded = False
        self._baseline_ms = None
        self._prompts_held = None
        self.incremental = self._new_incremental()

    def check_registry_matches(self) -> None:
        """Refuse a state file recorded for another registry: its diff would be nonsense."""
        recorded = self.store.get_meta(sm.REGISTRY.name)
        if recorded is not None and recorded != self.registry:
            raise StoreError(
                f"state {self.store.location!r} holds the snapshot of registry {recorded}, "
                f"not {self.registry}; use a separate [state] path for each registry"
            )

    @property
    def reader(self) -> Reader:
        """The poll's reader, opened on first use: building a pipeline connects to nothing."""
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
        """A complete, confirmed observation, or RegistryError: everything when ``full``,
        otherwise the cheapest read the cadences allow (the reader decides)."""
        plan = plan if plan is not None else Plan()
        if self.hinted is not None:
            plan.hinted = self.hinted.take()
        return self.incremental.observe(self.reader, self._previous(), plan, everything=full)

    def run_cycle(self, *, full: bool = False) -> CycleReport:
        """One poll: observe, then commit what was observed.

        ``full`` reads everything instead of what the cadences ask for: a cron run is rare and
        must not miss a tag change waiting for a cadence.
        """
        return self.commit(self.observe(full=full))

    def observe(self, *, full: bool = False) -> Cycle:
        """Read the registry and detect what changed since the committed snapshot.

        Writes nothing to the state (a dry run is this alone). A failed read is logged here,
        with the failure streak's back-off; committing it records it in the state meta.
        """
        started = time.monotonic()
        if self._failures.waiting(started):
            # MLflow keeps failing the same way: poll less often until it answers again.
            skipped = CycleReport(
                ok=False, duration_ms=0.0, error=self._failures.last_error, skipped=True
            )
            return Cycle(skipped, started, full)
        plan = Plan()
        before = self._reader.stats.copy() if self._reader is not None else ReadStats()
        switching = self._prompts_switch()
        try:
            current = self.read(full=full or switching, plan=plan)
        except RegistryError as exc:
            report = CycleReport(ok=False, duration_ms=_ms(started), error=str(exc))
            self._add_costs(report, before)
            self._log_failure(report)
            return Cycle(report, started, full, plan=plan)
        failed_before = self._failures.recovered()
        if failed_before:
            self.log.info("poll.recovered", failed_polls=failed_before)
        previous = self._previous()
        if self._baseline_ms is None:
            self._baseline_ms = sm.BASELINE_READ_AT.get(self.store.all_meta()) or 0
        policy = replace(
            self.policy,
            baseline_ms=self._baseline_ms,
            prompts=self.config.watches_prompts and not switching,
        )
        events = detect(previous, current, policy, plan.changed_versions)
        if previous is not None:  # the baseline asks for no runs (watcher.experiments)
            events = self.experiments.add_to(events, self.reader)
        prompts, prompt_versions = _prompt_counts(current)
        report = CycleReport(
            ok=True,
            duration_ms=0.0,
            baseline=previous is None,
            models=len(current.models) - prompts,
            versions=len(current.versions) - prompt_versions,
            prompts=prompts,
            prompt_versions=prompt_versions,
            events=events,
            kind="+".join(plan.kinds),
            hot_ms=plan.hot_ms,
        )
        self._add_costs(report, before)
        report.duration_ms = _ms(started)
        return Cycle(report, started, full, previous, current, plan)

    def _prompts_switch(self) -> bool:
        """Whether this poll starts or stops watching prompts (a webhook subscribed to prompt
        events, or none does any more, since the snapshot was committed). Such a poll reads
        everything, so the snapshot gains (or loses) every prompt at once, and reports none of
        them: subscribing on an existing state must not announce every prompt as created."""
        if self._previous() is None:
            return False
        if self._prompts_held is None:
            self._prompts_held = bool(sm.PROMPTS_SINCE.get(self.store.all_meta()))
        return self._prompts_held != self.config.watches_prompts

    def commit(self, cycle: Cycle) -> CycleReport:
        """Write an observed cycle: the snapshot change, the events, their deliveries and the
        state meta in one transaction (or, for a failed read, the failure in the meta)."""
        report, previous, current = cycle.report, cycle.previous, cycle.current
        if report.skipped:
            return report
        hints = self.hinted.unrecorded() if self.hinted is not None else {}
        if current is None:
            self.store.set_meta(self._failure_meta(report) | hints)
            self._recorded(hints)
            return report
        deliveries = [
            NewDelivery(make_delivery_id(e.event_id, w.name), e.event_id, w.name, e.model_name)
            for e in report.events
            for w in self.config.webhooks
            if w.wants(e)
        ]
        delta = snapshot_delta(previous, current, cycle.plan.changed_versions)
        report.duration_ms = _ms(cycle.started)
        report.queued = self.store.commit_cycle(
            delta, report.events, deliveries, self._success_meta(cycle, current) | hints
        )
        self._recorded(hints)
        self.incremental.committed(previous, current, delta)
        self._snapshot = current
        if previous is None:
            self._baseline_ms = current.read_at
        self._prompts_held = self.config.watches_prompts
        self._log_committed(report)
        return report

    def _log_failure(self, report: CycleReport) -> None:
        """Count the failure in the streak; log the 1st, 2nd, 4th, 8th... of a run of it."""
        error = report.error or ""
        count = self._failures.failed(error, time.monotonic())
        if _is_power_of_two(count):
            self.log.warning(
                "poll.failed",
                error=error,
                duration_ms=round(report.duration_ms),
                **({"repeated": count} if count > 1 else {}),
                **({"next_poll_in_s": round(self._failures.delay, 1)} if count > 1 else {}),
            )

    def _recorded(self, hints: dict[str, str]) -> None:
        """The hint counts (``status`` shows them) rode in this commit: the service need not
        write them in a transaction of their own."""
        if self.hinted is not None:
            self.hinted.recorded(hints)

    def _failure_meta(self, report: CycleReport) -> dict[str, str]:
        return sm.meta(
            sm.LAST_POLL_AT.entry(time.time()),
            sm.LAST_POLL_RESULT.entry(sm.POLL_FAILED),
            sm.LAST_POLL_ERROR.entry(report.error or ""),
            sm.LAST_POLL_DURATION_MS.entry(round(report.duration_ms)),
        )

    def _success_meta(self, cycle: Cycle, current: Observation) -> dict[str, str]:
        """What a good poll records beside the snapshot (see watcher.state_meta)."""
        now = time.time()
        report = cycle.report
        meta = sm.meta(
            sm.REGISTRY.entry(self.registry),
            sm.SNAPSHOT_READ_AT.entry(current.read_at),
            sm.LAST_POLL_AT.entry(now),
            sm.LAST_POLL_OK_AT.entry(now),
            sm.LAST_POLL_RESULT.entry(sm.POLL_OK),
            sm.LAST_POLL_ERROR.entry(""),
            sm.MODELS.entry(report.models),
            sm.VERSIONS.entry(report.versions),
            sm.PROMPTS.entry(report.prompts),
            sm.PROMPT_VERSIONS.entry(report.prompt_versions),
            sm.LAST_POLL_DURATION_MS.entry(round(report.duration_ms)),
        )
        if not cycle.full:  # a daemon's cadences; a full read on request has none
            meta.update(self.incremental.scan_meta())
        if cycle.previous is None:
            meta.update(
                sm.meta(sm.BASELINE_AT.entry(now), sm.BASELINE_READ_AT.entry(current.read_at))
            )
        if cycle.previous is None or self._prompts_held != self.config.watches_prompts:
            since = current.read_at if self.config.watches_prompts else 0
            meta.update(sm.meta(sm.PROMPTS_SINCE.entry(since)))
        return meta

    def _log_committed(self, report: CycleReport) -> None:
        """poll.baseline after the first cycle, poll.finished after each, poll.cadence when
        the chosen cadences move."""
        if report.baseline:
            self.log.info(
                "poll.baseline",
                models=report.models,
                versions=report.versions,
                events=len(report.events),
                note="first cycle: recorded what exists"
                + (" and emitted it" if self.policy.emit_existing else "; nothing emitted"),
            )
        self.log.info(
            "poll.finished",
            duration_ms=round(report.duration_ms),
            read=report.kind,
            requests=report.requests,
            mlflow_ms=round(report.mlflow_ms),
            **({"hot_ms": round(report.hot_ms)} if report.hot_ms else {}),
            models=report.models,
            versions=report.versions,
            events=len(report.events),
            queued=report.queued,
        )
        cadences = self.incremental.cadences()
        if _changed_much(self._cadences, cadences):
            self.log.info("poll.cadence", **cadences, max_duty=self.config.watch.max_duty)
            self._cadences = cadences

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


def _prompt_counts(observation: Observation) -> tuple[int, int]:
    """How many of the observation's models are MLflow 3 prompts, and how many versions they
    have (counted apart from the models and versions: a prompt is a registered model to MLflow,
    not to whoever reads `status`)."""
    prompts = {name for name, model in observation.models.items() if is_prompt(model)}
    if not prompts:
        return 0, 0
    return len(prompts), sum(1 for name, _ in observation.versions if name in prompts)
