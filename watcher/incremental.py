"""Reading what changed, not what exists: the plan of each cycle's reads.

MLflow moves a version's ``last_updated_timestamp`` on every stage transition and description
change, and its registered model's on every version created, transitioned, deleted or renamed.
So a steady cycle asks for the versions and the models updated since the last watermark (newest
first, stopping past the watermark minus an overlap for clock and commit skew), and re-reads by
name the versions of each model whose timestamp moved (which reveals deleted versions). Tags and
aliases move no timestamp on SQL stores, and a deleted model leaves none: a full scan of the
registered models (aliases, model deletions) and a full scan of the versions (version tags, and
a safety net for anything missed) run on their own, slower cadences.

With ``auto`` cadences the watcher times its own full scans and spaces them so that reading
stays within ``max_duty`` of wall time; a small registry, whose scans take milliseconds, is
still scanned in full every cycle.

A scan that takes longer than a quarter of the poll interval (a large registry: 13 s for 100k
versions) runs in the background when the daemon allows it, with a reader of its own, while
the polls go on; the poll after it finishes merges it. A scan's rows are a picture of the
moment each page was read, so the merge takes from it only what no poll has read since the
scan started (polls record what they read), and still confirms anything it lacks with a
direct read before calling it gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.errors import RegistryError
from watcher.model import ModelState, Observation, SnapshotDelta, VersionState
from watcher.registry import (
    Reader,
    ReadStats,
    confirm_missing,
    is_prompt,
    keep_newer,
    now_ms,
)

WATERMARK_OVERLAP_MS = 10_000
"""Changes are re-read this far behind the newest timestamp seen: a write whose transaction
committed late, or a server clock that stepped back, is still caught (re-reading is harmless)."""

# Shares of max_duty for the two full scans; the incremental reads use what is left.
FULL_SCAN_SHARE = 0.6
MODELS_SCAN_SHARE = 0.3

BACKGROUND_AFTER = 0.25
"""A full scan that took at least this share of the poll interval runs in the background next
time (when the daemon gives a runner): the polls must not wait for it."""

Key = tuple[str, str]

Runner = Callable[[Callable[[], None]], None]
"""Starts a background scan: on a daemon thread in the service; when a test says in tests."""


def thread_runner(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="registry-scan", daemon=True).start()


class TrackedVersions(dict[Key, VersionState]):
    """A copy of the snapshot's versions that records every key written or removed since.

    Whatever a read did not touch is the snapshot's own object, so detection and the snapshot
    delta compare only these keys: a quiet poll of 100k versions does not walk all of them.
    """

    def __init__(self, base: Mapping[Key, VersionState]) -> None:
        super().__init__(base)
        self.touched: set[Key] = set()

    def __setitem__(self, key: Key, value: VersionState) -> None:
        self.touched.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: Key) -> None:
        self.touched.add(key)
        super().__delitem__(key)

    def pop(self, key: Key, default: Any = None) -> Any:
        self.touched.add(key)
        return super().pop(key, default)

    def update(self, other: Mapping[Key, VersionState]) -> None:  # type: ignore[override]
        for key, value in other.items():
            self[key] = value

    def _untracked(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("TrackedVersions: use item assignment, del, pop or update")

    setdefault = popitem = clear = __ior__ = _untracked


@dataclass
class ScanJob:
    """A full scan running (or run) in the background, and what it read."""

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
    """When a full scan of one kind is due: a fixed interval, or auto (from its own cost)."""

    fixed: float | None
    share: float
    last_at: float = float("-inf")
    last_seconds: float = 0.0

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


@dataclass
class Plan:
    """How the last observation was read."""

    kinds: list[str] = field(default_factory=list)
    """"full" (everything), or "incremental" plus any of "models", "versions" scans (run in
    the poll, or in the background and merged by it)."""
    rescanned_models: int = 0
    changed_versions: set[Key] | None = None
    """The only version keys that may differ from the snapshot (None: any may)."""


class IncrementalReader:
    """Turns a snapshot plus cheap reads into a complete observation."""

    def __init__(
        self,
        watches: Callable[[str], bool],
        poll_interval: float,
        models_interval: float | None,
        full_scan_interval: float | None,
        max_duty: float,
        log: Any,
        *,
        scan_reader: Callable[[], Reader] | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.watches = watches
        self.poll_interval = poll_interval
        self.max_duty = max_duty
        self.models = Cadence(models_interval, MODELS_SCAN_SHARE)
        self.full = Cadence(full_scan_interval, FULL_SCAN_SHARE)
        self.log = log
        self.supported = True
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
        # While a background scan is out: which read last saw each row (its sequence number).
        self._merged: ScanJob | None = None
        self._seen_models: dict[str, int] = {}
        self._seen_versions: dict[Key, int] = {}
        self._reread_models: dict[str, int] = {}

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
            self._job = None
            self._forget_reads()
            if "models" in job.kinds:
                self.models.done(job.finished_at, job.seconds.get("models", 0.0))
            if "versions" in job.kinds:
                self.full.done(job.finished_at, job.seconds.get("versions", 0.0))
        self._merged = None
        if previous is None or self._indexed is not previous:
            self._index(observation)
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
        self._indexed = observation

    def cadences(self) -> dict[str, float]:
        return {
            "models_interval_s": round(self.models.interval(self.poll_interval, self.max_duty), 3),
            "full_scan_interval_s": round(self.full.interval(self.poll_interval, self.max_duty), 3),
        }

    def scan_meta(self) -> dict[str, str]:
        """The chosen cadences and the last scans' lengths, for `status` and /metrics."""
        cadences = self.cadences()
        return {
            "models_scan_every_s": str(cadences["models_interval_s"]),
            "versions_scan_every_s": str(cadences["full_scan_interval_s"]),
            "models_scan_took_s": str(round(self.models.last_seconds, 3)),
            "versions_scan_took_s": str(round(self.full.last_seconds, 3)),
        }

    # ----------------------------------------------------------------- reads

    def read_full(self, reader: Reader, previous: Observation | None) -> Observation:
        """Everything, confirming whatever seems to have gone."""
        self._drop_job()  # this read is fresher than anything a background scan could bring
        started = time.monotonic()
        models = reader.scan_models(self.watches, previous.models if previous else None)
        scanned_models = time.monotonic()
        versions = reader.scan_versions(
            self.watches, models, previous.versions if previous else None
        )
        finished = time.monotonic()
        self.models.done(finished, scanned_models - started)
        self.full.done(finished, finished - scanned_models)
        if previous is not None:
            self._confirm(reader, previous, models, versions, previous.versions.keys())
        self._latecomers(reader, models, versions)
        return Observation(models=models, versions=versions, read_at=now_ms())

    def read(self, reader: Reader, previous: Observation, plan: Plan) -> Observation:
        """The cheapest complete observation the cadences allow."""
        self._index(previous)
        self._seq += 1
        self._merged = None
        now = time.monotonic()
        # While a background scan is out, no other scan starts: its result is merged first.
        idle = self._job is None
        models_due = idle and self.models.due(now, self.poll_interval, self.max_duty)
        full_due = idle and self.full.due(now, self.poll_interval, self.max_duty)
        later = tuple(
            kind
            for kind, due, cadence in (
                ("models", models_due, self.models),
                ("versions", full_due, self.full),
            )
            if due and self._offload(cadence)
        )
        models_due = models_due and "models" not in later
        full_due = full_due and "versions" not in later
        if models_due and full_due:
            plan.kinds.append("full")
            return self.read_full(reader, previous)
        plan.kinds.append("incremental")
        models = dict(previous.models)
        versions: dict[Key, VersionState] = TrackedVersions(previous.versions)
        moved: set[str] = set()
        added: dict[str, set[Key]] = {}

        if models_due:
            plan.kinds.append("models")
            started = time.monotonic()
            scanned = reader.scan_models(self.watches, previous.models)
            self.models.done(time.monotonic(), time.monotonic() - started)
            gone = [n for n in previous.models if n not in scanned]
            found, _ = confirm_missing(reader, gone, [])
            scanned.update(found)
            for name in previous.models.keys() - scanned.keys():
                self._drop_versions_of(name, versions, added)  # its versions went with it
            moved = {n for n, m in scanned.items() if _moved(previous.models.get(n), m)}
            models = scanned
        else:
            since = self._model_mark - WATERMARK_OVERLAP_MS
            for model in reader.models_updated_since(since, self.watches):
                self._saw_model(model.name)
                if _moved(previous.models.get(model.name), model):
                    moved.add(model.name)
                models[model.name] = model

        if full_due:
            plan.kinds.append("versions")
            started = time.monotonic()
            versions = reader.scan_versions(self.watches, models, previous.versions)
            self.full.done(time.monotonic(), time.monotonic() - started)
            self._confirm(reader, previous, models, versions, previous.versions.keys())
            self._latecomers(reader, models, versions)
        else:
            since = self._version_mark - WATERMARK_OVERLAP_MS
            for version in reader.versions_updated_since(since, self.watches):
                self._saw_version(version.key)
                keep_newer(versions, version)
                added.setdefault(version.name, set()).add(version.key)
            job = self._job
            if job is not None and job.finished.is_set():
                self._merge(reader, job, plan, models, versions, moved, added)
            moved |= self._latecomers(reader, models, versions, added.keys())
            for name in sorted(moved):
                self._reread_model(reader, name, previous, versions, added.get(name, set()))
            plan.rescanned_models = len(moved)
        if isinstance(versions, TrackedVersions):  # not replaced by a scan in the poll
            plan.changed_versions = versions.touched
        if later:
            self._start(later, previous)
        return Observation(models=models, versions=versions, read_at=now_ms())

    # ----------------------------------------------------------------- background scans

    def _offload(self, cadence: Cadence) -> bool:
        """Whether this scan goes to the background: it is slow, and the daemon allows it."""
        return (
            self._runner is not None
            and self._scan_reader_factory is not None
            and cadence.last_seconds >= BACKGROUND_AFTER * self.poll_interval
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
        self._forget_reads()
        self.log.debug("scan.started", kinds="+".join(kinds))
        runner(lambda: self._run(reader, job))

    def _run(self, reader: Reader, job: ScanJob) -> None:
        """The background scan itself: reads only; the poll that merges it does the rest."""
        before = reader.stats.copy()
        try:
            if "models" in job.kinds:
                started = time.monotonic()
                job.models = reader.scan_models(self.watches, job.reuse.models)
                job.seconds["models"] = time.monotonic() - started
            if "versions" in job.kinds:
                started = time.monotonic()  # after the models: _start puts both in the job
                job.versions = reader.scan_versions(self.watches, job.models, job.reuse.versions)
                job.seconds["versions"] = time.monotonic() - started
        except BaseException as exc:  # handed to the poll thread, which logs it
            job.error = exc
        finally:
            job.stats = reader.stats.since(before)
            job.finished_at = time.monotonic()
            job.finished.set()

    def _drop_job(self) -> None:
        """Forget a background scan (a full read in the poll replaces it); its thread ends
        on its own and nothing it read is used."""
        self._job = None
        self._merged = None
        self._forget_reads()

    def _forget_reads(self) -> None:
        self._seen_models = {}
        self._seen_versions = {}
        self._reread_models = {}

    def _saw_model(self, name: str) -> None:
        if self._job is not None:
            self._seen_models[name] = self._seq

    def _saw_version(self, key: Key) -> None:
        if self._job is not None:
            self._seen_versions[key] = self._seq

    def _merge(
        self,
        reader: Reader,
        job: ScanJob,
        plan: Plan,
        models: dict[str, ModelState],
        versions: dict[Key, VersionState],
        moved: set[str],
        added: dict[str, set[Key]],
    ) -> None:
        """Fold a finished background scan into this read: only rows no poll read since the
        scan started; what it lacks is confirmed with a direct read before it is dropped."""
        if job.error is not None:
            self._job = None
            self._forget_reads()
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
        fresh = job.seq

        if job.models is not None:
            plan.kinds.append("models(background)")
            scanned = job.models
            for name, model in scanned.items():
                if self._seen_models.get(name, 0) > fresh or models.get(name) is model:
                    continue
                if _moved(models.get(name), model):
                    moved.add(name)
                models[name] = model
            gone = [n for n in models if n not in scanned and self._seen_models.get(n, 0) <= fresh]
            found, _ = confirm_missing(reader, gone, [])
            models.update(found)
            for name in gone:
                if name not in found:
                    del models[name]
                    self._drop_versions_of(name, versions, added)

        if job.versions is not None:
            plan.kinds.append("versions(background)")
            scanned_versions = job.versions

            def untouched(key: Key) -> bool:
                # A model in `moved` is re-read by name after the merge: that read is fresher.
                return (
                    self._seen_versions.get(key, 0) <= fresh
                    and self._reread_models.get(key[0], 0) <= fresh
                    and key[0] not in moved
                )

            for key, version in scanned_versions.items():
                known = versions.get(key)
                if known is not version and untouched(key):
                    versions[key] = version
                    if known is None:  # new to the snapshot: indexed like a poll's reads
                        added.setdefault(key[0], set()).add(key)
            missing = [k for k in versions if k not in scanned_versions and untouched(k)]
            for name in sorted({k[0] for k in missing if k[0] in models}):
                if reader.get_model(name) is None:  # the model went, not just its versions
                    del models[name]
                    self._drop_versions_of(name, versions, added)
            missing = [k for k in missing if k in versions]
            _, found_versions = confirm_missing(reader, [], missing)
            for key in missing:
                if key in found_versions:
                    versions[key] = found_versions[key]
                else:
                    versions.pop(key, None)
        self.log.info(
            "scan.merged",
            kinds="+".join(job.kinds),
            duration_ms=round(sum(job.seconds.values()) * 1000),
            waited_ms=round((time.monotonic() - job.finished_at) * 1000),
            requests=job.stats.requests,
            bytes=job.stats.bytes,
        )

    def _drop_versions_of(
        self, name: str, versions: dict[Key, VersionState], added: dict[str, set[Key]]
    ) -> None:
        for key in self._keys_by_model.get(name, set()) | added.pop(name, set()):
            versions.pop(key, None)

    def _latecomers(
        self,
        reader: Reader,
        models: dict[str, ModelState],
        versions: dict[Key, VersionState],
        names: Iterable[str] | None = None,
    ) -> set[str]:
        """Models created after the models were read but whose versions were seen: fetch them,
        so that a version is never reported before its model. Returns the names added."""
        candidates = {k[0] for k in versions} if names is None else set(names)
        added: set[str] = set()
        for name in sorted(candidates - models.keys()):
            latecomer = reader.get_model(name)
            self._saw_model(name)
            if latecomer is None or is_prompt(latecomer):  # gone again already, or a prompt
                for key in [k for k in versions if k[0] == name]:
                    del versions[key]
            elif self.watches(latecomer.name):
                models[latecomer.name] = latecomer
                added.add(latecomer.name)
        return added

    def _reread_model(
        self,
        reader: Reader,
        name: str,
        previous: Observation,
        versions: dict[Key, VersionState],
        added: set[Key],
    ) -> None:
        """Replace one model's versions by a by-name read; a version gone from it is confirmed."""
        if self._job is not None:
            self._reread_models[name] = self._seq
        fresh = reader.versions_of(name)
        known = self._keys_by_model.get(name, set()) | added
        for key in known - fresh.keys():
            if key in previous.versions:
                still = reader.get_version(*key)
                if still is not None:
                    fresh[still.key] = still
                    continue
            versions.pop(key, None)
        for version in fresh.values():
            keep_newer(versions, version)

    def _confirm(
        self,
        reader: Reader,
        previous: Observation,
        models: dict[str, ModelState],
        versions: dict[Key, VersionState],
        before: Iterable[Key],
    ) -> None:
        """Put back what a full scan missed but a direct read still finds.

        A model whose versions vanished from a version scan may itself be gone (deleted since
        the last models scan): it is asked for, so that its deletion is one event, not one per
        version.
        """
        missing_models = [n for n in previous.models if n not in models]
        missing_versions = [k for k in before if k not in versions]
        if not missing_models and not missing_versions:
            return
        for name in sorted({k[0] for k in missing_versions if k[0] in models}):
            if reader.get_model(name) is None:
                del models[name]
                missing_models.append(name)
        found_models, found_versions = confirm_missing(reader, missing_models, missing_versions)
        if found_models or found_versions:
            self.log.info(
                "poll.scan_gap",
                models=len(found_models),
                versions=len(found_versions),
                reason="the scan missed rows that still exist (paging under concurrent writes)",
            )
        models.update(found_models)
        versions.update(found_versions)


def _moved(before: ModelState | None, after: ModelState) -> bool:
    return (
        before is None
        or before.last_updated_timestamp != after.last_updated_timestamp
        or before.creation_timestamp != after.creation_timestamp
    )


def is_unsupported(exc: RegistryError) -> bool:
    """The server refused an incremental read (order_by or filter): fall back to full scans."""
    return exc.code == "INVALID_PARAMETER_VALUE" or exc.status in (400, 501)
