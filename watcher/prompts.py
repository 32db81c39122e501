"""Prompt detection: MLflow 3's prompt registry, previous snapshot x new observation -> events.
Pure, like :mod:`watcher.detect`, which calls it.

MLflow 3 stores a prompt as a registered model tagged ``mlflow.prompt.is_prompt`` and each of
its versions as a model version whose tags hold the template (``mlflow.prompt.text``) and its
kind (``_mlflow_prompt_type``). The watcher reads them with the same searches as models (so it
works wherever those do: MLflow 3 without native webhooks, the file store, managed servers), and
only when a webhook subscribes to a prompt event. The model detector leaves them alone; this
module says what changed, following the model detector's rules:

- A deleted prompt emits PROMPT_DELETED once, nothing for its versions and aliases.
- A prompt or prompt version created before the baseline is adopted silently; so is every prompt
  in the read that starts watching prompts (``adopt_all``): subscribing to prompt events on an
  existing state must not report every existing prompt as created.
- A new prompt emits PROMPT_CREATED and one PROMPT_TAG_SET per tag; a new version
  PROMPT_VERSION_CREATED and one PROMPT_VERSION_TAG_SET per tag: a tag set right after creation
  (MLflow's client adds ``_mlflow_experiment_ids`` that way) is never lost between two polls.
- The tags of a created prompt or version, and the tag events that come with it, are MLflow's:
  without the tags MLflow keeps for itself at creation (:data:`CREATION_TAGS`; the template is
  the event's ``template``). A tag changed later is an event whatever its key, as MLflow's own
  webhook reports every tag set through its API.
- An alias counts only while its version exists; a moved alias is one PROMPT_ALIAS_CREATED with
  the version it pointed to before.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from watcher.diffs import Emit, alias_events, live_aliases, make_event, one_of, row_of, tag_events
from watcher.model import Event, EventType, ModelState, Observation, VersionState

PROMPT_TAG = "mlflow.prompt.is_prompt"
"""MLflow 3 stores prompts as registered models (and their versions) with this tag."""
TEXT_TAG = "mlflow.prompt.text"
"""A prompt version's template (a chat prompt's messages as JSON text)."""
TYPE_TAG = "_mlflow_prompt_type"
CREATION_TAGS = frozenset({PROMPT_TAG, TEXT_TAG, TYPE_TAG})
"""The tags MLflow's handlers leave out of prompt.created and prompt_version.created."""

RANK: Mapping[EventType, int] = {
    EventType.PROMPT_CREATED: 0,
    EventType.PROMPT_VERSION_CREATED: 1,
    EventType.PROMPT_TAG_SET: 4,
    EventType.PROMPT_TAG_DELETED: 4,
    EventType.PROMPT_VERSION_TAG_SET: 4,
    EventType.PROMPT_VERSION_TAG_DELETED: 4,
    EventType.PROMPT_ALIAS_DELETED: 5,
    EventType.PROMPT_ALIAS_CREATED: 6,
    EventType.PROMPT_VERSION_DELETED: 7,
    EventType.PROMPT_DELETED: 8,
}
"""Within one timestamp: a prompt before its versions, what happens to them, deletions last
(the same order as the model detector's)."""


def is_prompt(model: ModelState) -> bool:
    return model.tags.get(PROMPT_TAG, "").lower() == "true"


def prompt_names(*observations: Observation) -> frozenset[str]:
    """The names that are prompts in any of the observations."""
    return frozenset(n for o in observations for n, m in o.models.items() if is_prompt(m))


def user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags MLflow's webhook sends for a created prompt or version."""
    return {k: v for k, v in tags.items() if k not in CREATION_TAGS}


def detect_prompts(
    previous: Observation,
    current: Observation,
    registry: str,
    cutoff: int | None,
    changed_versions: Collection[tuple[str, str]] | None = None,
) -> list[Event]:
    """The prompt events between two reads (unsorted: :func:`watcher.detect.detect` orders
    them with the models'). ``cutoff`` as for models: what was created before it is adopted."""
    then, now = prompt_names(previous), prompt_names(current)
    if not then and not now:
        return []
    detector = _PromptDetector(previous, current, registry, cutoff, then, now, changed_versions)
    return list(detector.run())


@dataclass
class _PromptDetector:
    previous: Observation
    current: Observation
    registry: str
    cutoff: int | None
    then: frozenset[str]
    """The prompts of the previous read."""
    now: frozenset[str]
    """The prompts of this read."""
    changed_versions: Collection[tuple[str, str]] | None = None
    _gone: set[str] = field(default_factory=set)
    _adopted: set[str] = field(default_factory=set)
    _adopted_versions: set[tuple[str, str]] = field(default_factory=set)

    def run(self) -> Iterator[Event]:
        yield from self._prompts()
        yield from self._versions()
        yield from self._aliases()

    def _is_new(self, creation_timestamp: int) -> bool:
        return self.cutoff is None or creation_timestamp >= self.cutoff

    def _same(self, name: str) -> ModelState | None:
        """The previous state of a prompt that still exists as the same prompt."""
        if name not in self.then or name not in self.now:
            return None
        before, after = self.previous.models[name], self.current.models[name]
        return before if before.creation_timestamp == after.creation_timestamp else None

    def _emitter(self, name: str) -> Emit:
        """Events about prompt ``name`` (the version's number and user come with a version)."""
        return functools.partial(make_event, self.registry, name)

    # ----------------------------------------------------------------- prompts

    def _prompts(self) -> Iterator[Event]:
        for name in sorted(self.then | self.now):
            same = self._same(name)
            after = self.current.models.get(name) if name in self.now else None
            if name in self.then and same is None:
                self._gone.add(name)
                before = self.previous.models[name]
                again = self.current.models.get(name)  # a prompt or a model of the same name
                yield self._emitter(name)(
                    EventType.PROMPT_DELETED,
                    # Deleted before it was created again: keep that order for receivers.
                    self.current.read_at if again is None else again.creation_timestamp - 1,
                    before.creation_timestamp,
                    None,
                    user_id=before.user_id,
                )
            if after is None:
                continue
            if same is not None:
                yield from self._tag_events(same.tags, after.tags, name)
            elif not self._is_new(after.creation_timestamp):
                self._adopted.add(name)
            else:
                yield from self._created(after)

    def _created(self, prompt: ModelState) -> Iterator[Event]:
        tags = user_tags(prompt.tags)
        yield self._emitter(prompt.name)(
            EventType.PROMPT_CREATED,
            prompt.creation_timestamp,
            None,
            [prompt.creation_timestamp, prompt.last_updated_timestamp],
            user_id=prompt.user_id,
            description=prompt.description,
            tags=tags,
        )
        yield from self._tag_events({}, tags, prompt.name)

    # ----------------------------------------------------------------- versions

    def _keys(
        self, versions: Mapping[tuple[str, str], VersionState], names: frozenset[str]
    ) -> list[tuple[str, str]]:
        only = self.changed_versions
        keys = versions.keys() if only is None else (k for k in only if k in versions)
        return sorted(k for k in keys if k[0] in names)

    def _versions(self) -> Iterator[Event]:
        before_all, after_all = self.previous.versions, self.current.versions
        for key in self._keys(after_all, self.now):
            version, before = after_all[key], before_all.get(key)
            if before is version or key[0] in self._adopted:
                continue
            if self._same(key[0]) is None or (
                before is not None and before.creation_timestamp != version.creation_timestamp
            ):
                before = None  # a prompt created now, or again: its versions are new
            if before is None:
                yield from self._new_version(version)
            else:
                yield from self._tag_events(before.tags, version.tags, key[0], version)
        for key in self._keys(before_all, self.then):
            before, after = before_all[key], after_all.get(key)
            gone = key[0] in self._gone  # PROMPT_DELETED says it all
            if gone or (
                after is not None and after.creation_timestamp == before.creation_timestamp
            ):
                continue
            yield self._emitter(key[0])(
                EventType.PROMPT_VERSION_DELETED,
                self._deletion_time(key[0]),
                None,
                None,
                before,
                description=before.description or None,
            )

    def _new_version(self, version: VersionState) -> Iterator[Event]:
        if not self._is_new(version.creation_timestamp):
            self._adopted_versions.add(version.key)
            return
        tags = user_tags(version.tags)
        yield self._emitter(version.name)(
            EventType.PROMPT_VERSION_CREATED,
            version.creation_timestamp,
            None,
            [version.creation_timestamp, version.last_updated_timestamp],
            version,
            description=version.description,
            tags=tags,
            template=version.tags.get(TEXT_TAG),
        )
        yield from self._tag_events({}, tags, version.name, version)

    def _deletion_time(self, name: str) -> int:
        """Deleting a version moves its prompt's last_updated_timestamp; use it when it moved."""
        before, after = self.previous.models.get(name), self.current.models.get(name)
        if before and after and after.last_updated_timestamp > before.last_updated_timestamp:
            return after.last_updated_timestamp
        return self.current.read_at

    # ----------------------------------------------------------------- tags

    def _tag_events(
        self,
        before: Mapping[str, str],
        after: Mapping[str, str],
        name: str,
        version: VersionState | None = None,
    ) -> Iterator[Event]:
        kinds = (
            (EventType.PROMPT_TAG_SET, EventType.PROMPT_TAG_DELETED)
            if version is None
            else (EventType.PROMPT_VERSION_TAG_SET, EventType.PROMPT_VERSION_TAG_DELETED)
        )
        emit = self._emitter(name)
        yield from tag_events(emit, kinds, before, after, self.current.read_at, version)

    # ----------------------------------------------------------------- aliases

    def _aliases(self) -> Iterator[Event]:
        at = self.current.read_at
        for name in sorted(self.now - self._adopted):
            prompt = self.current.models[name]
            same = self._same(name)
            before = live_aliases(self.previous, same) if same is not None else {}
            after = live_aliases(self.current, prompt)
            yield from alias_events(
                self._emitter(name),
                (EventType.PROMPT_ALIAS_CREATED, EventType.PROMPT_ALIAS_DELETED),
                before,
                after,
                at,
                (row_of(self.previous.versions, name), row_of(self.current.versions, name)),
                one_of(self._adopted_versions, name),
            )
