"""Reading what changed, not what exists: which reads each cycle makes, and when the scans run.

MLflow moves a version's ``last_updated_timestamp`` on every stage transition and description
change, and its registered model's on every version created, transitioned, deleted or renamed.
So a steady cycle asks for the versions and the models updated since the last watermark (newest
first, stopping past the watermark minus an overlap for clock and commit skew), and re-reads by
name the versions of each model whose timestamp moved (which reveals deleted versions). Tags and
aliases move no timestamp on SQL stores, and a deleted model leaves none: a models scan (every
registered model: aliases, model deletions) and a versions scan (every version: version tags,
and a safety net for anything missed) run on their own, slower cadences. A read with both
scans reads everything: its plan says "full".

With ``auto`` cadences the watcher times its own scans and spaces them so that reading stays
within ``max_duty`` of wall time; a small registry, whose scans take milliseconds, is still
scanned in full every cycle.

A scan that takes longer than a quarter of the poll interval (a large registry: 13 s for 100k
versions) runs in the background when the daemon allows it, with a reader of its own, while
the polls go on; the poll after it finishes merges it (:meth:`watcher.merge.Draft.fold`).

This module keeps what lives across reads: the cadences, the watermarks, the snapshot's index
and the background job. What one read brings, and what is gone, is :mod:`watcher.merge`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watcher import state_meta as sm
from watcher.errors import RegistryError
from watcher.hotread import TargetedReads
from watcher.hotset import HintedSpend, HotSet
from watcher.merge import Draft, Plan, Sightings, TrackedVersions
from watcher.model import ModelState, Observation, SnapshotDelta, VersionState
from watcher.scan import Key, Reader, ReadStats, Watches, is_refused, now_ms

__all__ = [
    "BACKGROUND_AFTER",
    "MODELS_SCAN_SHARE",
    "VERSIONS_SCAN_SHARE",
    "WATERMARK_OVERLAP_MS",
    "Cadence",
    "IncrementalReader",
    "Plan",
    "Runner",
    "ScanJob",
    "TrackedVersions",
    "thread_runner",
]

WATERMARK_OVERLAP_MS = 10_000
"""Changes are re-read this far behind the newest timestamp seen: a write whose transaction
committed late, or a server clock that stepped back, is still caught (re-reading is harmless)."""

# Shares of max_duty for the two scans; the incremental reads use what is left.
VERSIONS_SCAN_SHARE = 0.6
MODELS_SCAN_SHARE = 0.3

BACKGROUND_AFTER = 0.25
"""A scan that took at least this share of the poll interval runs in the background next
time (when the daemon gives a runner): the polls must not wait for it."""

NOTHING = Observation(models={}, versions={}, read_at=0)

Runner = Callable[[Callable[[], None]], None]
"""Starts a background scan: on a daemon thread in the service; when a test says in tests."""


def thread_runner(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="registry-scan", daemon=True).start()


@dataclass
class ScanJob:
    """A scan running (or run) in the background, and what it read."""

    kinds: tuple[str, ...]
    """"models", "versions", or both."""
    seq: int
    """The read that started it: whatever a later read saw is fresher than the scan."""
    reuse: Observation
    """The snapshot when it started: rows equal to its rows are shared, not copied."""
    models: dict[str, ModelState] | None = None
    versions: dict[Key, VersionState] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0


@dataclass
class Cadence:
    """When a scan of one kind is due: a fixed interval, or auto (from its own cost)."""

    fixed: float | None
    share: float
    last_at: float = float("-inf")
    last_seconds: float = 0.0
    ran: bool = False
    """Whether this scan has run in this process (a restart, or a new leader, owes one)."""

    def interval(self, poll_interval: float, max_duty: float) -> float:
        if self.fixed is not None:
            return self.fixed
        return max(poll_interval, self.last_seconds / (max_duty * self.share))

    def due(self, now: float, poll_interval: float, max_duty: float) -> bool:
        # Half an interval of slack: a scan due "any moment now" runs this cycle, not next.
        return now - self.last_at >= self.interval(poll_interval, max_duty) - poll_interval / 2

    def done(self, at: float, seconds: float) -> None:
        self.last_at = at
        self.last_seconds = seconds
        self.ran = True


class IncrementalReader:
    """Turns a snapshot plus cheap reads into a complete observation.

    ``clock`` (monotonic seconds) times the scans and decides when they are due; ``wall_ms``
    stamps each observation (epoch milliseconds). Tests pass their own.
    """

    def __init__(
        self,
        watches: Watches,
        poll_interval: float,
        models_interval: float | None,
        versions_interval: float | None,
        max_duty: float,
        log: Any,
        *,
        scan_reader: Callable[[], Reader] | None = None,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        hot_window: float = 0.0,
    ) -> None:
        self.watches = watches
        self.poll_interval = poll_interval
        self.max_duty = max_duty
        self.models_scan = Cadence(models_interval, MODELS_SCAN_SHARE)
        self.versions_scan = Cadence(versions_interval, VERSIONS_SCAN_SHARE)
        self.log = log
        self.hot = HotSet(round(hot_window * 1000), max_duty, poll_interval)
        self._targeted = TargetedReads(self.hot, watches, log, clock)
        self.hinted = HintedSpend(started=clock())
        """What the polls hints started read: it comes out of the scans' share of max_duty."""
        self._scans_s = 0.0
        """What this poll's own scans took (counted by their cadences, not as hinted)."""
        self.supported = True
        """False once the server refused an incremental read: every read is full since."""
        self._clock = clock
        self._wall_ms = wall_ms
        self._keys_by_model: dict[str, set[Key]] = {}
        self._version_mark = 0
        self._model_mark = 0
        self._indexed: Observation | None = None
        self._scan_reader_factory = scan_reader
        self._scan_reader: Reader | None = None
        self._runner = runner
        self._job: ScanJob | None = None
        self._failed_jobs = 0
        self._seq = 0
        self._merged: ScanJob | None = None
        self._sightings: Sightings | None = None
        """While a background scan is out: what the polls read since it started."""

    # ----------------------------------------------------------------- bookkeeping

    def _index(self, snapshot: Observation) -> None:
        """Per-model version keys and watermarks of the snapshot (built once, then kept)."""
        if self._indexed is snapshot:
            return
        self._keys_by_model = {}
        for key in snapshot.versions:
            self._keys_by_model.setdefault(key[0], set()).add(key)
        self._version_mark = max(
            (v.last_updated_timestamp for v in snapshot.versions.values()), default=0
        )
        self._model_mark = max(
            (m.last_updated_timestamp for m in snapshot.models.values()), default=0
        )
        if self.hot.enabled:
            self.hot.rebuild(snapshot)
        self._indexed = snapshot

    def committed(
        self, previous: Observation | None, observation: Observation, delta: SnapshotDelta
    ) -> None:
        """The observation is now the snapshot: move the index and the watermarks with it.

        Only on commit: a cycle whose commit failed must read the same changes again (and
        merge the same background scan again).
        """
        job = self._merged
        if job is not None and job is self._job:  # the merged background scan is committed
            self._forget_job()
            if "models" in job.kinds:
                self.models_scan.done(job.finished_at, job.seconds.get("models", 0.0))
            if "versions" in job.kinds:
                self.versions_scan.done(job.finished_at, job.seconds.get("versions", 0.0))
        self._merged = None
        if previous is None or self._indexed is not previous:
            # Built by the next read that needs it (read() indexes its snapshot first): a
            # one-shot run (`run --once`) has none, and 100k keys cost it a tenth of a second.
            self._indexed = None
            return
        for key in delta.delete_versions:
            self._keys_by_model.get(key[0], set()).discard(key)
        for version in delta.upsert_versions:
            self._keys_by_model.setdefault(version.name, set()).add(version.key)
            self._version_mark = max(self._version_mark, version.last_updated_timestamp)
        for name in delta.delete_models:
            if not self._keys_by_model.get(name):
                self._keys_by_model.pop(name, None)
        for model in delta.upsert_models:
            self._model_mark = max(self._model_mark, model.last_updated_timestamp)
        if self.hot.enabled:
            self.hot.update(delta)
        self._indexed = observation

    def cadences(self) -> dict[str, float]:
        """Seconds between scans of each kind, as chosen now (fixed, or auto from their cost)."""
        return {
            "models_scan_every_s": round(
                self.models_scan.interval(self.poll_interval, self._scan_duty()), 3
            ),
            "versions_scan_every_s": round(
                self.versions_scan.interval(self.poll_interval, self._scan_duty()), 3
            ),
        }

    def scan_meta(self) -> dict[str, str]:
        """The chosen cadences and the last scans' lengths, for `status` and /metrics."""
        scans = {"models": self.models_scan, "versions": self.versions_scan}
        return sm.meta(
            *(
                sm.SCAN_EVERY[kind].entry(scan.interval(self.poll_interval, self._scan_duty()))
                for kind, scan in scans.items()
            ),
            *(sm.SCAN_TOOK[kind].entry(scan.last_seconds) for kind, scan in scans.items()),
            sm.HOT_MODELS.entry(self.hot.size),
            sm.HOT_ROUND_S.entry(self.hot.round_s()),
        )

    def scan_next(self, *kinds: str) -> None:
        """Make the named scans ("models", "versions") due at the next read, as if their
        cadence had run out."""
        cadences = {"models": self.models_scan, "versions": self.versions_scan}
        for kind in kinds:
            cadences[kind].last_at = float("-inf")

    # ----------------------------------------------------------------- reads

    def observe(
        self,
        reader: Reader,
        previous: Observation | None,
        plan: Plan,
        *,
        everything: bool = False,
    ) -> Observation:
        """A complete, confirmed observation, or RegistryError.

        ``everything`` reads both scans (cron runs are rare: they must not wait for a
        cadence); so does the first read, and every read once the server has refused an
        incremental one. Otherwise the cheapest read the cadences allow.
        """
        if previous is not None and not everything and self.supported:
            try:
                return self.read(reader, previous, plan)
            except RegistryError as exc:
                if not is_refused(exc):
                    raise
                self.supported = False
                self.log.warning(
                    "poll.incremental_unsupported",
                    error=str(exc),
                    note="this MLflow refuses the incremental reads; every poll is a full scan now",
                )
                plan.kinds.clear()
        try:
            return self.read_everything(reader, previous, plan)
        finally:
            if reader.progress is not None:
                reader.progress("done", 0)

    def read_everything(
        self, reader: Reader, previous: Observation | None, plan: Plan
    ) -> Observation:
        """Both scans, confirming whatever seems to have gone."""
        plan.kinds.append("full")
        self._drop_job()  # this read is fresher than anything a background scan could bring
        draft = Draft(reader, self.watches, previous or NOTHING, {}, plan, self.log)
        started = self._clock()
        models = reader.scan_models(self.watches, previous.models if previous else None)
        models_took = self._clock() - started
        draft.models_scanned(models)
        started = self._clock()
        versions = reader.scan_versions(
            self.watches, draft.models, previous.versions if previous else None
        )
        finished = self._clock()
        self.models_scan.done(finished, models_took)
        self.versions_scan.done(finished, finished - started)
        draft.versions_scanned(versions)
        return draft.observation(self._wall_ms())

    def read(self, reader: Reader, previous: Observation, plan: Plan) -> Observation:
        """The cheapest complete observation the cadences allow."""
        self._index(previous)
        self._seq += 1
        self._merged = None
        models_due, versions_due, later = self._due()
        if models_due and versions_due:
            return self.read_everything(reader, previous, plan)
        started, self._scans_s = self._clock(), 0.0
        observation = self._read_incrementally(reader, previous, plan, models_due, versions_due)
        if plan.hinted:  # a poll hints started (or took along): its reading is theirs
            finished = self._clock()
            own = finished - started - self._scans_s - plan.hot_ms / 1000
            self.hinted.add(finished, own)
        if later:
            self._start(later, previous)
        return observation

    def _scan_duty(self) -> float:
        """What the hot set and the polls hints started leave of max_duty for the scans."""
        return self.hot.scan_duty(self.hinted.duty(self._clock()))

    def _read_incrementally(
        self,
        reader: Reader,
        previous: Observation,
        plan: Plan,
        models_due: bool,
        versions_due: bool,
    ) -> Observation:
        """The watermark searches and the targeted reads, with the scans that are due now."""
        plan.kinds.append("incremental")
        draft = Draft(
            reader,
            self.watches,
            previous,
            self._keys_by_model,
            plan,
            self.log,
            seq=self._seq,
            sightings=self._sightings,
        )
        hot = self.hot.members(previous, previous.read_at)
        if models_due:
            self._scan_models(draft)
        else:
            self._targeted.models_since(draft, hot, self._model_mark - WATERMARK_OVERLAP_MS)
        if versions_due:
            self._scan_versions(draft)
            # The scan brings the versions, not a hinted model's record (aliases, tags).
            self._targeted.read_hinted(draft, plan.hinted)
        else:
            since = self._version_mark - WATERMARK_OVERLAP_MS
            draft.versions_updated(reader.versions_updated_since(since, self.watches))
            self._merge_finished_job(draft)
            draft.reread_moved()
            self._targeted.read_hot(draft, hot)
            self._targeted.read_hinted(draft, plan.hinted)
        return draft.observation(self._wall_ms())

    def _due(self) -> tuple[bool, bool, tuple[str, ...]]:
        """Which scans run in this poll (models, versions), and which go to the background."""
        now = self._clock()
        # While a background scan is out, no other scan starts: its result is merged first.
        due = {
            kind: self._job is None and cadence.due(now, self.poll_interval, self._scan_duty())
            for kind, cadence in (("models", self.models_scan), ("versions", self.versions_scan))
        }
        later = tuple(
            kind
            for kind, cadence in (("models", self.models_scan), ("versions", self.versions_scan))
            if due[kind] and self._offload(cadence)
        )
        return (
            due["models"] and "models" not in later,
            due["versions"] and "versions" not in later,
            later,
        )

    def _scan_models(self, draft: Draft) -> None:
        draft.plan.kinds.append("models")
        started = self._clock()
        scanned = draft.reader.scan_models(self.watches, draft.previous.models)
        finished = self._clock()
        self.models_scan.done(finished, finished - started)
        self._scans_s += finished - started
        draft.models_scanned(scanned)

    def _scan_versions(self, draft: Draft) -> None:
        draft.plan.kinds.append("versions")
        started = self._clock()
        scanned = draft.reader.scan_versions(self.watches, draft.models, draft.previous.versions)
        finished = self._clock()
        self.versions_scan.done(finished, finished - started)
        self._scans_s += finished - started
        draft.versions_scanned(scanned)

    # ----------------------------------------------------------------- background scans

    def _offload(self, cadence: Cadence) -> bool:
        """Whether this scan goes to the background, when the daemon allows it: it is slow, or
        it has not run in this process yet. A restarted daemon, or a replica that has just
        taken the lead, resumes from the committed snapshot with an incremental poll (its
        watermarks come from the snapshot), and the scans it owes do not hold that poll up."""
        return (
            self._runner is not None
            and self._scan_reader_factory is not None
            and (not cadence.ran or cadence.last_seconds >= BACKGROUND_AFTER * self.poll_interval)
        )

    def _start(self, kinds: tuple[str, ...], snapshot: Observation) -> None:
        runner, factory = self._runner, self._scan_reader_factory
        if runner is None or factory is None:
            return
        reader = self._scan_reader if self._scan_reader is not None else factory()
        self._scan_reader = reader
        if "versions" in kinds:
            # The models come too (a second the 13 s of 100k versions hardly notice): they
            # tell the scan which models are prompts, whose versions are not watched.
            kinds = ("models", "versions")
        job = ScanJob(kinds=kinds, seq=self._seq, reuse=snapshot)
        self._job = job
        self._sightings = Sightings()
        self.log.debug("scan.started", kinds="+".join(kinds))
        runner(lambda: self._run(reader, job))

    def _run(self, reader: Reader, job: ScanJob) -> None:
        """The background scan itself: reads only; the poll that merges it does the rest."""
        before = reader.stats.copy()
        try:
            if "models" in job.kinds:
                started = self._clock()
                job.models = reader.scan_models(self.watches, job.reuse.models)
                job.seconds["models"] = self._clock() - started
            if "versions" in job.kinds:
                started = self._clock()  # after the models: _start puts both in the job
                job.versions = reader.scan_versions(self.watches, job.models, job.reuse.versions)
                job.seconds["versions"] = self._clock() - started
        except BaseException as exc:  # handed to the poll thread, which logs it
            job.error = exc
        finally:
            job.stats = reader.stats.since(before)
            job.finished_at = self._clock()
            job.finished.set()

    def _drop_job(self) -> None:
        """Forget a background scan (a full read in the poll replaces it); its thread ends
        on its own and nothing it read is used."""
        self._forget_job()
        self._merged = None

    def _forget_job(self) -> None:
        self._job = None
        self._sightings = None

    def _merge_finished_job(self, draft: Draft) -> None:
        """Fold a finished background scan into this read, or log why it failed (the next
        poll starts it again: the cadence still says it is due)."""
        job = self._job
        if job is None or not job.finished.is_set():
            return
        if job.error is not None:
            self._forget_job()
            self._failed_jobs += 1
            if self._failed_jobs & (self._failed_jobs - 1) == 0:  # 1st, 2nd, 4th... in a row
                self.log.warning(
                    "scan.failed",
                    kinds="+".join(job.kinds),
                    error=str(job.error)
                    if isinstance(job.error, RegistryError)
                    else f"{type(job.error).__name__}: {job.error}",
                    repeated=self._failed_jobs,
                    note="the polls go on; the next poll starts the scan again",
                )
            return
        self._failed_jobs = 0
        self._merged = job
        draft.fold(job.models, job.versions, job.seq)
        self.log.info(
            "scan.merged",
            kinds="+".join(job.kinds),
            duration_ms=round(sum(job.seconds.values()) * 1000),
            waited_ms=round((self._clock() - job.finished_at) * 1000),
            requests=job.stats.requests,
            bytes=job.stats.bytes,
        )
