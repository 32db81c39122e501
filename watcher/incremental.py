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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from watcher.errors import RegistryError
from watcher.model import ModelState, Observation, SnapshotDelta, VersionState
from watcher.registry import Reader, confirm_missing, keep_newer, now_ms

WATERMARK_OVERLAP_MS = 10_000
"""Changes are re-read this far behind the newest timestamp seen: a write whose transaction
committed late, or a server clock that stepped back, is still caught (re-reading is harmless)."""

# Shares of max_duty for the two full scans; the incremental reads use what is left.
FULL_SCAN_SHARE = 0.6
MODELS_SCAN_SHARE = 0.3

Key = tuple[str, str]


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
    """"full" (everything), or "incremental" plus any of "models", "versions" scans."""
    rescanned_models: int = 0


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

        Only on commit: a cycle whose commit failed must read the same changes again.
        """
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

    # ----------------------------------------------------------------- reads

    def read_full(self, reader: Reader, previous: Observation | None) -> Observation:
        """Everything, confirming whatever seems to have gone."""
        started = time.monotonic()
        models = reader.scan_models(self.watches)
        scanned_models = time.monotonic()
        versions = reader.scan_versions(self.watches, models)
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
        now = time.monotonic()
        models_due = self.models.due(now, self.poll_interval, self.max_duty)
        full_due = self.full.due(now, self.poll_interval, self.max_duty)
        if models_due and full_due:
            plan.kinds.append("full")
            return self.read_full(reader, previous)
        plan.kinds.append("incremental")
        models = dict(previous.models)
        versions = dict(previous.versions)
        moved: set[str] = set()

        if models_due:
            plan.kinds.append("models")
            started = time.monotonic()
            scanned = reader.scan_models(self.watches)
            self.models.done(time.monotonic(), time.monotonic() - started)
            gone = [n for n in previous.models if n not in scanned]
            found, _ = confirm_missing(reader, gone, [])
            scanned.update(found)
            for name in previous.models.keys() - scanned.keys():
                for key in self._keys_by_model.get(name, ()):  # its versions went with it
                    versions.pop(key, None)
            moved = {n for n, m in scanned.items() if _moved(previous.models.get(n), m)}
            models = scanned
        else:
            since = self._model_mark - WATERMARK_OVERLAP_MS
            for model in reader.models_updated_since(since, self.watches):
                if _moved(previous.models.get(model.name), model):
                    moved.add(model.name)
                models[model.name] = model

        if full_due:
            plan.kinds.append("versions")
            started = time.monotonic()
            versions = reader.scan_versions(self.watches, models)
            self.full.done(time.monotonic(), time.monotonic() - started)
            self._confirm(reader, previous, models, versions, previous.versions.keys())
            self._latecomers(reader, models, versions)
        else:
            since = self._version_mark - WATERMARK_OVERLAP_MS
            added: dict[str, set[Key]] = {}
            for version in reader.versions_updated_since(since, self.watches):
                keep_newer(versions, version)
                added.setdefault(version.name, set()).add(version.key)
            moved |= self._latecomers(reader, models, versions, added.keys())
            for name in sorted(moved):
                self._reread_model(reader, name, previous, versions, added.get(name, set()))
            plan.rescanned_models = len(moved)
        return Observation(models=models, versions=versions, read_at=now_ms())

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
            if latecomer is not None and self.watches(latecomer.name):
                models[latecomer.name] = latecomer
                added.add(latecomer.name)
            elif latecomer is None:  # gone again already: so are its versions
                for key in [k for k in versions if k[0] == name]:
                    del versions[key]
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
