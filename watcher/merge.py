"""One read in progress: what each read brings is folded into it, and one routine decides
what is gone.

An incremental read starts from the snapshot and folds in, in this order, what its reads
bring: the rows updated since the watermarks or a scan run in the poll, a finished background
scan, the models created after the models were read (latecomers), and by-name re-reads of the
models whose timestamp moved. :class:`Draft` holds that read's models and versions while it is
built. Whatever a read no longer shows (a model missing from a models scan, a version missing
from a versions scan or from its model's by-name read) is passed to :meth:`Draft.settle`, the
only code that decides something is gone: it asks for it directly, puts back what a get still
finds, and drops the rest (a model with all its versions). A model appeared under a new name may
be a renamed one: :meth:`Draft.renamed_away` asks for the old name in the same read.

Offset paging hides live rows while others are deleted, and an old server can answer a search
with nothing: only what a direct get also cannot find is really gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.errors import RegistryError
from watcher.model import ModelState, Observation, VersionState
from watcher.scan import Key, Reader, Watches, keep_newer


@dataclass
class Plan:
    """How the last observation was read."""

    kinds: list[str] = field(default_factory=list)
    """"full" (both scans: everything read), or "incremental" plus any of "models", "versions"
    (a models scan, a versions scan run in the poll) or "models(background)",
    "versions(background)" (one run beside the polls, merged by this one)."""
    rescanned_models: int = 0
    hot_ms: float = 0.0
    """Milliseconds the hot set's reads took beyond the poll's own (its share of max_duty)."""
    changed_versions: set[Key] | None = None
    """The only version keys that may differ from the snapshot (None: any may)."""
    hinted: frozenset[str] = frozenset()
    """Models MLflow's native webhooks named since the last poll (watcher.hints): read now."""

    def mark(self, kind: str) -> None:
        """Name a kind of read once (the hot set's: "incremental+hot")."""
        if kind not in self.kinds:
            self.kinds.append(kind)


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


class Sightings:
    """While a background scan is out: which read (by sequence number) last saw each row.

    A scan's rows are a picture of the moment each page was read; a row some poll read after
    the scan started is fresher, and the merge leaves it alone.
    """

    def __init__(self) -> None:
        self.models: dict[str, int] = {}
        self.versions: dict[Key, int] = {}
        self.reread: dict[str, int] = {}
        """Models whose versions a poll re-read by name."""

    def model_fresher(self, name: str, seq: int) -> bool:
        return self.models.get(name, 0) > seq

    def version_fresher(self, key: Key, seq: int) -> bool:
        return self.versions.get(key, 0) > seq or self.reread.get(key[0], 0) > seq


@dataclass
class Draft:
    """One read being built from the snapshot (``previous``) and what each read brings."""

    reader: Reader
    watches: Watches
    previous: Observation
    index: Mapping[str, set[Key]]
    """The snapshot's version keys by model."""
    plan: Plan
    log: Any
    seq: int = 0
    """This read's number, as ``sightings`` record it."""
    sightings: Sightings | None = None
    """Where this read records what it saw (None: no background scan is out)."""
    models: dict[str, ModelState] = field(init=False)
    versions: dict[Key, VersionState] = field(init=False)
    moved: set[str] = field(default_factory=set)
    """Models whose timestamp moved: their versions are re-read by name."""
    added: dict[str, set[Key]] = field(default_factory=dict)
    """Version keys this read brought that the snapshot's index lacks, by model."""
    confirmed: set[str] = field(default_factory=set)
    """Models a direct read found in this read: not asked for again."""
    gone: set[str] = field(default_factory=set)
    """Models a get found gone in this read: their versions went with them."""
    _by_creation: dict[int, list[str]] | None = field(default=None, init=False)
    """The snapshot's model names by creation time, built when a new name first appears."""

    def __post_init__(self) -> None:
        self.models = dict(self.previous.models)
        self.versions = TrackedVersions(self.previous.versions)

    # ----------------------------------------------------------------- what reads bring

    def models_scanned(self, scanned: dict[str, ModelState]) -> None:
        """A models scan replaces the models; the ones it lacks are settled."""
        self.models = scanned
        self.settle([n for n in self.previous.models if n not in scanned], ())
        before = self.previous.models
        self.moved = {n for n, m in self.models.items() if _moved(before.get(n), m)}

    def versions_scanned(self, scanned: dict[Key, VersionState]) -> None:
        """A versions scan replaces the versions; the ones it lacks are settled, and versions
        of models created after the models were read bring their model."""
        self.versions = scanned
        self.settle((), [k for k in self.previous.versions if k not in scanned])
        self.latecomers()

    def models_updated(self, rows: Iterable[ModelState]) -> None:
        names: list[str] = []
        for model in rows:
            self._saw_model(model.name)
            if _moved(self.previous.models.get(model.name), model):
                self.moved.add(model.name)
            self.models[model.name] = model
            names.append(model.name)
        self.renamed_away(names)

    def versions_updated(self, rows: Iterable[VersionState]) -> None:
        for version in rows:
            if self.sightings is not None:
                self.sightings.versions[version.key] = self.seq
            keep_newer(self.versions, version)
            self.added.setdefault(version.name, set()).add(version.key)

    def fold(
        self,
        models: dict[str, ModelState] | None,
        versions: dict[Key, VersionState] | None,
        started: int,
    ) -> None:
        """Fold a background scan started by read number ``started`` into this read: only the
        rows no poll has read since."""
        sightings = self.sightings if self.sightings is not None else Sightings()
        if models is not None:
            self.plan.kinds.append("models(background)")
            for name, model in models.items():
                known = self.models.get(name)
                if known is model or sightings.model_fresher(name, started):
                    continue
                if _moved(known, model):
                    self.moved.add(name)
                self.models[name] = model
            stale = [n for n in self.models if n not in models]
            self.settle([n for n in stale if not sightings.model_fresher(n, started)], ())
        if versions is not None:
            self.plan.kinds.append("versions(background)")

            def untouched(key: Key) -> bool:
                # A model in `moved` is re-read by name after the merge: that read is fresher.
                return not sightings.version_fresher(key, started) and key[0] not in self.moved

            for key, version in versions.items():
                held = self.versions.get(key)
                if held is not version and untouched(key):
                    self.versions[key] = version
                    if held is None:  # new to the snapshot: indexed like a poll's reads
                        self.added.setdefault(key[0], set()).add(key)
            self.settle((), [k for k in self.versions if k not in versions and untouched(k)])

    def reread_moved(self) -> None:
        """Re-read by name the versions of every model whose timestamp moved (which reveals
        deleted versions), after fetching the models whose versions came first."""
        self.moved |= self.latecomers(self.added.keys())
        for name in sorted(self.moved):
            self._reread(name)
        self.plan.rescanned_models = len(self.moved)

    def reread_hot(self, hot: Iterable[str]) -> None:
        """Re-read the versions of the ``hot`` models (their tags move no timestamp), batched;
        the models re-read by name already, or gone, are left out."""
        rest = sorted(n for n in hot if n not in self.moved and n in self.models)
        if rest:
            for name, fresh in self.reader.versions_of_models(rest).items():
                self._reread(name, fresh)

    def models_recent(self, rows: Iterable[ModelState], expected: Iterable[str]) -> None:
        """Models updated since a time the snapshot's ``expected`` models are all at or past:
        since a model's timestamp never goes back, one the answer lacks was deleted, or hidden
        by paging under concurrent writes; settle asks for each before believing it."""
        rows = list(rows)
        self.models_updated(rows)
        answered = {m.name for m in rows}
        self.settle(sorted(n for n in expected if n not in answered and n in self.models), ())

    def refresh_models(self, names: Iterable[str]) -> None:
        """Read these models directly (their aliases and tags move no timestamp); a model a get
        no longer finds is gone, with its versions."""
        for name in sorted(names):
            if name in self.models and name not in self.confirmed:
                model = self.reader.get_model(name)
                self._saw_model(name)
                if model is None:
                    self._confirm_gone(name)
                elif self.reader.keeps(model):
                    self.confirmed.add(name)
                    self.models[name] = model

    def observation(self, read_at: int) -> Observation:
        if isinstance(self.versions, TrackedVersions):  # not replaced by a scan
            self.plan.changed_versions = self.versions.touched
        return Observation(models=self.models, versions=self.versions, read_at=read_at)

    # ----------------------------------------------------------------- what is gone

    def settle(self, models: Iterable[str], versions: Iterable[Key]) -> None:
        """Decide whether the models and versions a read no longer shows are gone.

        Each is asked for directly; what a get still finds is put back, the rest dropped. A
        model whose versions went may itself be gone (deleted since the last models scan): it
        is asked for once, so that its deletion is one event, not one per version.
        """
        found_models = sum(self._confirm_model(name, restore=True) for name in models)
        keys = [k for k in versions if k[0] not in self.gone]
        for name in sorted({k[0] for k in keys if k[0] in self.models} - self.confirmed):
            self._confirm_model(name, restore=False)
        found_versions = 0
        for key in keys:
            found = None if key[0] in self.gone else self.reader.get_version(*key)
            if found is None:
                self.versions.pop(key, None)
            else:
                self.versions[key] = found
                found_versions += 1
        if found_models or found_versions:
            self.log.info(
                "poll.scan_gap",
                models=found_models,
                versions=found_versions,
                reason="a read missed rows that still exist (paging under concurrent writes)",
            )

    def _confirm_model(self, name: str, *, restore: bool) -> bool:
        """Ask for one model: True if it was missing from the read and is back. A model that
        is gone goes with every version this read knows of."""
        model = self.reader.get_model(name)
        if model is None or not self.reader.keeps(model):  # gone, or a prompt not read now
            self._confirm_gone(name)
            return False
        self.confirmed.add(name)
        if restore:
            self.models[name] = model
        return restore

    def _confirm_gone(self, name: str) -> None:
        """A get found no such model: drop it with every version this read knows of. A
        background scan read before is older than this answer: it must not bring it back."""
        self.gone.add(name)
        self.models.pop(name, None)
        keys = self.index.get(name, set()) | self.added.pop(name, set())
        if not isinstance(self.versions, TrackedVersions):  # a scan's: not indexed
            keys |= {k for k in self.versions if k[0] == name}
        for key in keys:
            self.versions.pop(key, None)
        self._saw_model(name)
        if self.sightings is not None:
            self.sightings.reread[name] = self.seq

    def latecomers(self, names: Iterable[str] | None = None) -> set[str]:
        """Models created after the models were read but whose versions were seen: fetch them,
        so that a version is never reported before its model. Returns the names added."""
        candidates = {k[0] for k in self.versions} if names is None else set(names)
        added: set[str] = set()
        for name in sorted(candidates - self.models.keys()):
            latecomer = self.reader.get_model(name)
            self._saw_model(name)
            if latecomer is None or not self.reader.keeps(latecomer):  # gone, or a prompt
                for key in [k for k in self.versions if k[0] == name]:
                    del self.versions[key]
            elif self.watches(latecomer.name):
                self.models[latecomer.name] = latecomer
                added.add(latecomer.name)
        self.renamed_away(added)
        return added

    def renamed_away(self, names: Iterable[str]) -> None:
        """Of the models this read holds under ``names``, those the snapshot lacks (a new
        name, or a name whose model has another creation time) may be renamed ones: MLflow
        moves a renamed model's timestamp, so a poll reads the new name at once, but nothing
        says the old name went until a models scan. A model of the snapshot this read still
        holds, created at the same millisecond, is asked for by its name: gone, it is dropped
        now, so that detection sees both sides of the rename in one read and pairs them. Only
        such a twin costs a get (a model created now has none). A read earlier in this one
        may predate the rename, so whatever it saw is asked for all the same."""
        for name in sorted(set(names)):
            model, before = self.models.get(name), self.previous.models.get(name)
            if model is None or (before and before.creation_timestamp == model.creation_timestamp):
                continue  # dropped by now, or the same model as before
            created = model.creation_timestamp
            for twin in self._created_at(created):
                held = self.models.get(twin)
                if twin != name and held is not None and held.creation_timestamp == created:
                    self._drop_if_gone(twin)

    def _created_at(self, created: int) -> list[str]:
        """The snapshot's models created at ``created`` (indexed once per read, on demand)."""
        if self._by_creation is None:
            self._by_creation = {}
            for model in self.previous.models.values():
                self._by_creation.setdefault(model.creation_timestamp, []).append(model.name)
        return self._by_creation.get(created, [])

    def _drop_if_gone(self, name: str) -> None:
        """Drop ``name`` if a get finds no model by it. One found is kept (still there, or
        created again: the models scan tells them apart), as it is when the get fails: the
        poll stays whole, and the next models scan settles the old name."""
        try:
            model = self.reader.get_model(name)
        except RegistryError as exc:
            self.log.warning("poll.rename_check_failed", model=name, error=str(exc))
            return
        if model is None:
            self._confirm_gone(name)

    def _reread(self, name: str, fresh: dict[Key, VersionState] | None = None) -> None:
        """Replace one model's versions by a by-name read (or ``fresh``, its part of a batched
        one); the ones it lacks are settled."""
        if self.sightings is not None:
            self.sightings.reread[name] = self.seq
        if fresh is None:
            fresh = self.reader.versions_of(name)
            self.confirmed.add(name)  # the by-name read just answered for the model
        known = self.index.get(name, set()) | self.added.get(name, set())
        for version in fresh.values():
            keep_newer(self.versions, version)
        self.settle((), sorted(known - fresh.keys()))

    def _saw_model(self, name: str) -> None:
        if self.sightings is not None:
            self.sightings.models[name] = self.seq


def _moved(before: ModelState | None, after: ModelState) -> bool:
    return (
        before is None
        or before.last_updated_timestamp != after.last_updated_timestamp
        or before.creation_timestamp != after.creation_timestamp
    )
