"""What the model detector (:mod:`watcher.detect`) and the prompt detector (:mod:`watcher.prompts`)
share: how a mapping of tags or aliases changed between two reads, the events that say so, and
how an event is made with its deterministic id. Pure, like both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Protocol

from watcher.model import Event, EventType, ModelState, Observation, VersionState, make_event_id

Lookup = Callable[[str], VersionState | None]
"""A version number -> its row, of one model in one read (see :func:`row_of`)."""


class Emit(Protocol):
    """Makes one event about one model or prompt (its name bound by the caller)."""

    def __call__(
        self,
        kind: EventType,
        timestamp: int,
        before: Any,
        after: Any,
        version: VersionState | None = None,
        **fields: Any,
    ) -> Event: ...


def make_event(
    registry: str,
    name: str,
    kind: EventType,
    timestamp: int,
    before: Any,
    after: Any,
    version: VersionState | None = None,
    *,
    model_version: str | None = None,
    **fields: Any,
) -> Event:
    """An event, its id made of what it says (the same change detected again: the same id).
    ``version`` gives the version number, its creation time and, by default, the user."""
    number = version.version if version is not None else model_version
    created = version.creation_timestamp if version is not None else None
    return Event(
        event_id=make_event_id(registry, kind, name, number, created, before, after, timestamp),
        type=kind,
        model_name=name,
        timestamp=timestamp,
        model_version=number,
        version_creation_timestamp=created,
        user_id=fields.pop("user_id", version.user_id if version is not None else ""),
        **fields,
    )


def changes(
    before: Mapping[str, str], after: Mapping[str, str]
) -> Iterator[tuple[str, str | None, str | None]]:
    """(key, old, new) of each key set or changed, in ``after``'s order, then of each removed
    (new None), in ``before``'s order."""
    for key, value in after.items():
        old = before.get(key)
        if old != value:
            yield key, old, value
    for key, old in before.items():
        if key not in after:
            yield key, old, None


def tag_events(
    emit: Emit,
    kinds: tuple[EventType, EventType],
    before: Mapping[str, str],
    after: Mapping[str, str],
    at: int,
    version: VersionState | None = None,
) -> Iterator[Event]:
    """The (set, deleted) ``kinds`` of events for each tag that changed, at time ``at``."""
    for key, old, new in changes(before, after):
        if new is None:
            yield emit(
                kinds[1], at, [key, old], [key, None], version, tag_key=key, previous_value=old
            )
        else:
            yield emit(
                kinds[0],
                at,
                [key, old],
                [key, new],
                version,
                tag_key=key,
                tag_value=new,
                previous_value=old,
            )


def alias_events(
    emit: Emit,
    kinds: tuple[EventType, EventType],
    before: Mapping[str, str],
    after: Mapping[str, str],
    at: int,
    versions: tuple[Lookup, Lookup],
    adopted: Callable[[str], bool],
) -> Iterator[Event]:
    """The (created, deleted) ``kinds`` of events for each alias set, moved or removed, at time
    ``at``; ``versions`` find a version number's row (before, after), and an alias newly on an
    ``adopted`` version is adopted with it."""
    for alias, old, new in changes(before, after):
        if new is None:
            yield emit(
                kinds[1],
                at,
                [alias, old],
                [alias, None],
                versions[0](old or ""),
                model_version=old,
                alias=alias,
            )
        elif old is not None or not adopted(new):
            yield emit(
                kinds[0],
                at,
                [alias, old],
                [alias, new],
                versions[1](new),
                model_version=new,
                alias=alias,
                previous_version=old,
            )


def row_of(versions: Mapping[tuple[str, str], VersionState], name: str) -> Lookup:
    """Finds a version number's row of model ``name`` in ``versions``."""
    return lambda number: versions.get((name, number))


def one_of(keys: Collection[tuple[str, str]], name: str) -> Callable[[str], bool]:
    """Whether a version number of model ``name`` is among ``keys``."""
    return lambda number: (name, number) in keys


def live_aliases(observation: Observation, model: ModelState) -> dict[str, str]:
    """The aliases of a model (or prompt) whose version exists in the same observation."""
    return {
        alias: version
        for alias, version in model.aliases.items()
        if (model.name, version) in observation.versions
    }
