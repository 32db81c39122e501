"""Detection: previous snapshot x new observation -> events. Pure: no I/O, no clock, no MLflow.

Polling sees states, not steps: a version moved None -> Staging -> Production between two polls
yields one event None -> Production. The detector never invents the middle step.

Rules that are choices, not facts (the README's event table repeats them):

- A deleted model emits REGISTERED_MODEL_DELETED once, and nothing for its versions and
  aliases: one event says it all, and receivers do not have to fold N deletions back into one.
- A renamed model emits REGISTERED_MODEL_RENAMED once, under its new name: a model gone and one
  appeared in the same read are one model renamed when they alone have the same creation time
  and the same versions (numbers, creation times, sources and run ids: MLflow keeps them all
  through a rename). Its versions and aliases are compared with the old name's, so only what
  else changed gives events. A pair that is ambiguous (models without versions created in the
  same millisecond) is what it looks like: a deletion and a creation or adoption.
- A model or version that appears but was created before the baseline (minus a clock-skew
  allowance) is adopted silently: it was not created now, it was just not watched before (the
  `models` globs widened). Its later changes are events like any other.
- A new version emits MODEL_VERSION_CREATED and, for what it already has, a transition from
  "None" to its stage and one MODEL_VERSION_TAG_SET per tag: a tag set right after creation is
  never lost in the gap between two polls.
- An alias counts only while its version exists. MLflow 2.x leaves an alias pointing at a deleted
  version (MLflow 3 removes it); either way MODEL_VERSION_ALIAS_DELETED is emitted once.
- Tags and aliases move no timestamp in MLflow's SQL stores, so their events carry the time of
  detection, and a tag set, deleted and set again across polls gives three distinct events.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.diffs import (
    Emit,
    alias_events,
    live_aliases,
    make_event,
    one_of,
    row_of,
    tag_events,
)
from watcher.model import (
    NO_STAGE,
    Event,
    EventType,
    ModelState,
    Observation,
    SnapshotDelta,
    VersionState,
)
from watcher.prompts import RANK as PROMPT_RANK
from watcher.prompts import detect_prompts, prompt_names
from watcher.renames import pair_renames, renames_first

_STAGE_EVENTS = {
    "staging": EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING,
    "production": EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
    "archived": EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED,
}

# Within one timestamp, the order a reader expects: a model before its versions, a version
# before what happens to it, deletions last.
_RANK = {
    EventType.REGISTERED_MODEL_CREATED: 0,
    EventType.REGISTERED_MODEL_RENAMED: 0,
    EventType.MODEL_VERSION_CREATED: 1,
    EventType.MODEL_VERSION_TRANSITIONED_STAGE: 2,
    EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING: 3,
    EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION: 3,
    EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED: 3,
    EventType.MODEL_VERSION_TAG_SET: 4,
    EventType.MODEL_VERSION_TAG_DELETED: 4,
    EventType.MODEL_VERSION_ALIAS_DELETED: 5,
    EventType.MODEL_VERSION_ALIAS_CREATED: 6,
    EventType.MODEL_VERSION_DELETED: 7,
    EventType.REGISTERED_MODEL_DELETED: 8,
    **PROMPT_RANK,
}

EMPTY = Observation(models={}, versions={}, read_at=0)

CREATION_SKEW_MS = 10 * 60 * 1000
"""How much earlier than the baseline a newly seen object may have been created and still count
as created now: covers clock skew between MLflow and the watcher and a scan that raced a write."""


@dataclass(frozen=True)
class Policy:
    registry: str
    """A stable identity of the registry, part of every event id."""
    emit_existing: bool = False
    """With no previous snapshot, emit events for what exists instead of recording a baseline."""
    baseline_ms: int = 0
    """When the baseline was read (epoch ms): what was created well before it is adopted."""
    prompts: bool = False
    """Detect prompt events (watcher.prompts): a webhook subscribes to them and the snapshot
    already held the prompts. Whatever it says, prompts never give model events."""


def detect(
    previous: Observation | None,
    current: Observation,
    policy: Policy,
    changed_versions: Collection[tuple[str, str]] | None = None,
) -> list[Event]:
    """Every change between two complete reads, in a stable, meaningful order.

    ``previous`` is None before the first cycle: then the observation becomes the baseline and
    nothing is emitted, unless the policy asks to emit what already exists.
    ``changed_versions``, when the read knows it, holds the only version keys whose rows may
    differ between the two (every other key holds the very same object, or is in neither).
    """
    if previous is None:
        if not policy.emit_existing:
            return []
        cutoff: int | None = None
        previous = EMPTY
        changed_versions = None
    else:
        cutoff = policy.baseline_ms - CREATION_SKEW_MS
    then, now = prompt_names(previous), prompt_names(current)
    detector = _Detector(
        _without(previous, then),
        _without(current, now),
        policy.registry,
        cutoff,
        changed_versions,
        skip=(then, now),
    )
    events = list(detector.run())
    if policy.prompts:
        events += detect_prompts(previous, current, policy.registry, cutoff, changed_versions)
    events.sort(
        key=lambda e: (e.timestamp, e.model_name, _version_order(e.model_version), _RANK[e.type])
    )
    return renames_first(events)


def _without(observation: Observation, prompts: frozenset[str]) -> Observation:
    """The observation without the prompts' records (their versions are skipped by name)."""
    if not prompts:
        return observation
    models = {n: m for n, m in observation.models.items() if n not in prompts}
    return Observation(models=models, versions=observation.versions, read_at=observation.read_at)


def _version_order(version: str | None) -> tuple[int, str]:
    if version is not None and version.isdigit():
        return (int(version), "")
    return (0, version or "")


@dataclass
class _Detector:
    previous: Observation
    current: Observation
    registry: str
    cutoff: int | None
    """Objects created before this (epoch ms) are adopted when first seen; None: nothing is."""
    changed_versions: Collection[tuple[str, str]] | None = None
    skip: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    """The prompts of the previous read and of this one: their versions are not models'."""
    _gone_models: set[str] = field(default_factory=set)
    """Models deleted, or renamed away: their versions give no events of their own."""
    _renamed: dict[str, str] = field(default_factory=dict)
    """New name -> old name of each model renamed between the two reads."""
    _adopted_models: set[str] = field(default_factory=set)
    _adopted_versions: set[tuple[str, str]] = field(default_factory=set)

    def run(self) -> Iterator[Event]:
        yield from self._models()
        yield from self._versions()
        yield from self._aliases()

    # ----------------------------------------------------------------- helpers

    def _is_new(self, creation_timestamp: int) -> bool:
        return self.cutoff is None or creation_timestamp >= self.cutoff

    def _same_model(self, name: str) -> ModelState | None:
        """The previous state of a model that still exists as the same model (not re-created)."""
        before = self.previous.models.get(name)
        after = self.current.models.get(name)
        if before is None or after is None:
            return None
        return before if before.creation_timestamp == after.creation_timestamp else None

    def _event(
        self,
        event_type: EventType,
        model_name: str,
        timestamp: int,
        before: Any,
        after: Any,
        version: VersionState | None = None,
        *,
        model_version: str | None = None,
        **fields: Any,
    ) -> Event:
        return make_event(
            self.registry,
            model_name,
            event_type,
            timestamp,
            before,
            after,
            version,
            model_version=model_version,
            source=(version.source or None) if version is not None else None,
            run_id=(version.run_id or None) if version is not None else None,
            **fields,
        )

    # ----------------------------------------------------------------- models

    def _models(self) -> Iterator[Event]:
        # Gone (or deleted and created again), and new: a pair of them may be one rename.
        vanished = [name for name in self.previous.models if self._same_model(name) is None]
        appeared = [name for name in self.current.models if self._same_model(name) is None]
        self._renamed = pair_renames(self.previous, self.current, vanished, appeared)
        self._gone_models.update(vanished)
        renamed_away = set(self._renamed.values())
        for name in vanished:
            before = self.previous.models[name]
            if name not in renamed_away:
                again = self.current.models.get(name)
                yield self._event(
                    EventType.REGISTERED_MODEL_DELETED,
                    name,
                    # Deleted before it was created again: keep that order for receivers.
                    self.current.read_at if again is None else again.creation_timestamp - 1,
                    before.creation_timestamp,
                    None,
                    user_id=before.user_id,
                )
        for name in appeared:
            model = self.current.models[name]
            if name in self._renamed:
                yield self._renamed_event(self.previous.models[self._renamed[name]], model)
                continue
            if not self._is_new(model.creation_timestamp):
                self._adopted_models.add(name)
                continue
            yield self._event(
                EventType.REGISTERED_MODEL_CREATED,
                name,
                model.creation_timestamp,
                None,
                # A rename keeps the creation time but moves this one: a model renamed away
                # and back is created anew, under a new id.
                [model.creation_timestamp, model.last_updated_timestamp],
                user_id=model.user_id,
                description=model.description,
                tags=dict(model.tags),
            )

    def _renamed_event(self, before: ModelState, after: ModelState) -> Event:
        return self._event(
            EventType.REGISTERED_MODEL_RENAMED,
            after.name,
            # MLflow moves it on a rename (a version's last_updated_timestamp too).
            after.last_updated_timestamp,
            [before.name, before.creation_timestamp],
            [after.name, after.creation_timestamp],
            user_id=after.user_id,
            previous_name=before.name,
        )

    # ----------------------------------------------------------------- versions

    def _versions(self) -> Iterator[Event]:
        previous_versions = self.previous.versions
        current_versions = self.current.versions
        for key, version in _items(current_versions, self.changed_versions):
            before = previous_versions.get(key)
            if before is version:
                continue  # untouched since the snapshot: the common case, kept cheap
            if version.name in self._adopted_models or version.name in self.skip[1]:
                continue
            if version.name in self._renamed:  # the same version, under its old name before
                before = previous_versions.get((self._renamed[version.name], version.version))
            if before is not None and before.creation_timestamp != version.creation_timestamp:
                before = None  # re-created model: version numbers restarted
            if before is None:
                yield from self._new_version(version)
            else:
                yield from _stage_events(self, before.current_stage, version)
                yield from self._tag_events(before.tags, version)
        for key, before in _items(previous_versions, self.changed_versions):
            after = current_versions.get(key)
            if after is before or (
                after is not None and after.creation_timestamp == before.creation_timestamp
            ):
                continue
            if before.name in self._gone_models or before.name in self.skip[0]:
                continue  # REGISTERED_MODEL_DELETED says it all (or it is a prompt's)
            yield self._event(
                EventType.MODEL_VERSION_DELETED,
                before.name,
                self._deletion_time(before.name),
                before.current_stage,
                None,
                before,
                description=before.description or None,
            )

    def _new_version(self, version: VersionState) -> Iterator[Event]:
        if not self._is_new(version.creation_timestamp):
            self._adopted_versions.add(version.key)  # existed before it was watched
            return
        yield self._event(
            EventType.MODEL_VERSION_CREATED,
            version.name,
            version.creation_timestamp,
            None,
            [version.creation_timestamp, version.last_updated_timestamp],
            version,
            description=version.description,
            tags=dict(version.tags),
        )
        yield from _stage_events(self, NO_STAGE, version)
        yield from self._tag_events({}, version)

    def _tag_events(self, before: Mapping[str, str], version: VersionState) -> Iterator[Event]:
        kinds = (EventType.MODEL_VERSION_TAG_SET, EventType.MODEL_VERSION_TAG_DELETED)
        emit = self._emitter(version.name)
        yield from tag_events(emit, kinds, before, version.tags, self.current.read_at, version)

    def _emitter(self, name: str) -> Emit:
        """Events about model ``name``, as :meth:`_event` makes them."""
        return lambda kind, *args, **fields: self._event(kind, name, *args, **fields)

    def _deletion_time(self, model_name: str) -> int:
        """Deleting a version bumps its model's last_updated_timestamp; use it when it moved."""
        before = self.previous.models.get(model_name)
        after = self.current.models.get(model_name)
        if before and after and after.last_updated_timestamp > before.last_updated_timestamp:
            return after.last_updated_timestamp
        return self.current.read_at

    # ----------------------------------------------------------------- aliases

    def _aliases(self) -> Iterator[Event]:
        at = self.current.read_at
        for name, model in self.current.models.items():
            if name in self._adopted_models:
                continue
            same = self._same_model(name)
            if name in self._renamed:
                same = self.previous.models[self._renamed[name]]
            before = live_aliases(self.previous, same) if same is not None else {}
            old_name = name if same is None else same.name
            after = live_aliases(self.current, model)
            yield from alias_events(
                self._emitter(name),
                (EventType.MODEL_VERSION_ALIAS_CREATED, EventType.MODEL_VERSION_ALIAS_DELETED),
                before,
                after,
                at,
                (row_of(self.previous.versions, old_name), row_of(self.current.versions, name)),
                one_of(self._adopted_versions, name),
            )


def _stage_events(detector: _Detector, from_stage: str, after: VersionState) -> Iterator[Event]:
    to_stage = after.current_stage
    if from_stage.lower() == to_stage.lower():
        return
    types = [EventType.MODEL_VERSION_TRANSITIONED_STAGE]
    specific = _STAGE_EVENTS.get(to_stage.lower())
    if specific is not None:
        types.append(specific)
    for event_type in types:
        yield detector._event(
            event_type,
            after.name,
            after.last_updated_timestamp,
            from_stage,
            to_stage,
            after,
            from_stage=from_stage,
            to_stage=to_stage,
        )


def snapshot_delta(
    previous: Observation | None,
    current: Observation,
    changed_versions: Collection[tuple[str, str]] | None = None,
) -> SnapshotDelta:
    """The rows to write and delete so the stored snapshot equals ``current``.

    ``changed_versions``, when the read knows it, holds the only version keys that may differ.
    """
    before = previous or EMPTY
    return SnapshotDelta(
        upsert_models=tuple(
            m for name, m in current.models.items() if _differs(before.models.get(name), m)
        ),
        delete_models=tuple(name for name in before.models if name not in current.models),
        upsert_versions=tuple(
            v
            for key, v in _items(current.versions, changed_versions)
            if _differs(before.versions.get(key), v)
        ),
        delete_versions=tuple(
            key
            for key, _ in _items(before.versions, changed_versions)
            if key not in current.versions
        ),
    )


def _items(
    versions: Mapping[tuple[str, str], VersionState],
    only: Collection[tuple[str, str]] | None,
) -> Iterable[tuple[tuple[str, str], VersionState]]:
    """All the versions, or only those of the given keys that are there (sorted: stable)."""
    if only is None:
        return versions.items()
    return [(key, versions[key]) for key in sorted(only) if key in versions]


def _differs(before: object, after: object) -> bool:
    """Identity first: an incremental read reuses the snapshot's objects for what it did not
    read again, and comparing 100k dataclasses field by field would dominate the cycle."""
    return before is not after and before != after
