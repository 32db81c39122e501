"""Renames: which model gone and model appeared in one read are one model renamed, and where its
event goes among the others. Pure, like :mod:`watcher.detect`, which calls it.

MLflow keeps a model's creation time and all of its versions (numbers, creation times, sources,
run ids) through a rename, and nothing else says "renamed" in a read: a pair that alone shares
them is one model. A pair that is ambiguous (models without versions created in the same
millisecond) is what it looks like: a deletion and a creation or adoption.
"""

from __future__ import annotations

import dataclasses

from watcher.model import Event, EventType, Observation


def pair_renames(
    previous: Observation, current: Observation, vanished: list[str], appeared: list[str]
) -> dict[str, str]:
    """New name -> old name of each model gone and model appeared that are alone in having the
    same identity (:func:`_identities`): one model, renamed."""
    if not vanished or not appeared:
        return {}  # the common case: no scan of the versions
    olds = _identities(previous, vanished)
    pairs: dict[str, str] = {}
    for identity, names in _identities(current, appeared).items():
        old = olds.get(identity, [])
        if len(names) == 1 and len(old) == 1 and names[0] != old[0]:
            pairs[names[0]] = old[0]
    return pairs


def _identities(observation: Observation, names: list[str]) -> dict[object, list[str]]:
    """The models of ``names`` by what a rename keeps: their creation time and the set of their
    versions' (number, creation time, source, run id)."""
    versions: dict[str, set[tuple[str, int, str, str]]] = {name: set() for name in names}
    for (name, number), version in observation.versions.items():
        if name in versions:
            versions[name].add((number, version.creation_timestamp, version.source, version.run_id))
    found: dict[object, list[str]] = {}
    for name in names:
        identity = (observation.models[name].creation_timestamp, frozenset(versions[name]))
        found.setdefault(identity, []).append(name)
    return found


def renames_first(events: list[Event]) -> list[Event]:
    """Each rename moved before anything else said of the renamed model under its new name:
    its time is the model's last update, which a change made after the rename moves past that
    change's. What is said of a model deleted under that name before stays before it.

    A rename moved forward takes the time of the first event it now precedes, if earlier:
    events stay in time order (receivers sort by it), and the rename did happen before what
    is said of the model under its new name."""
    for rename in [e for e in events if e.type is EventType.REGISTERED_MODEL_RENAMED]:
        name = rename.model_name
        start = 1 + max(
            (
                i
                for i, e in enumerate(events)
                if e.model_name == name and e.type is EventType.REGISTERED_MODEL_DELETED
            ),
            default=-1,
        )
        at = events.index(rename)
        start = min(start, at)
        first = next(i for i, e in enumerate(events) if i >= start and e.model_name == name)
        if first < at:
            events.pop(at)
            earliest = min(rename.timestamp, events[first].timestamp)
            events.insert(first, dataclasses.replace(rename, timestamp=earliest))
    return events
