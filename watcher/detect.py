"""Detection: previous snapshot x new observation -> events. Pure: no I/O, no clock, no MLflow.

Polling sees states, not steps: a version moved None -> Staging -> Production between two polls
yields one event None -> Production. The detector never invents the middle step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from watcher.model import (
    NO_STAGE,
    Event,
    EventType,
    Observation,
    SnapshotDelta,
    VersionState,
    make_event_id,
)

_STAGE_EVENTS = {
    "staging": EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING,
    "production": EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
    "archived": EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED,
}

EMPTY = Observation(models={}, versions={}, read_at=0)


@dataclass(frozen=True)
class Policy:
    registry: str
    """A stable identity of the registry, part of every event id."""
    emit_existing: bool = False
    """With no previous snapshot, emit events for what exists instead of recording a baseline."""


def detect(previous: Observation | None, current: Observation, policy: Policy) -> list[Event]:
    """Every change between two complete reads, in registry-timestamp order.

    ``previous`` is None before the first cycle: then the observation becomes the baseline and
    nothing is emitted, unless the policy asks to emit what already exists.
    """
    if previous is None:
        if not policy.emit_existing:
            return []
        previous = EMPTY
    events: list[Event] = []
    for key, version in current.versions.items():
        before = previous.versions.get(key)
        if before is not None and before.creation_timestamp != version.creation_timestamp:
            # The model was deleted and created again: version numbers restarted, so this is
            # a different version that happens to share the number.
            before = None
        events.extend(_stage_events(policy.registry, before, version))
    events.sort(key=lambda e: (e.timestamp, e.model_name, _version_order(e.model_version)))
    return events


def _version_order(version: str | None) -> tuple[int, str]:
    if version is not None and version.isdigit():
        return (int(version), "")
    return (0, version or "")


def _stage_events(
    registry: str, before: VersionState | None, after: VersionState
) -> Iterable[Event]:
    from_stage = before.current_stage if before is not None else NO_STAGE
    to_stage = after.current_stage
    if from_stage.lower() == to_stage.lower():
        return ()
    types = [EventType.MODEL_VERSION_TRANSITIONED_STAGE]
    specific = _STAGE_EVENTS.get(to_stage.lower())
    if specific is not None:
        types.append(specific)
    return tuple(
        Event(
            event_id=make_event_id(
                registry,
                event_type,
                after.name,
                after.version,
                after.creation_timestamp,
                from_stage,
                to_stage,
                after.last_updated_timestamp,
            ),
            type=event_type,
            model_name=after.name,
            model_version=after.version,
            version_creation_timestamp=after.creation_timestamp,
            timestamp=after.last_updated_timestamp,
            user_id=after.user_id,
            from_stage=from_stage,
            to_stage=to_stage,
            source=after.source,
            run_id=after.run_id,
        )
        for event_type in types
    )


def snapshot_delta(previous: Observation | None, current: Observation) -> SnapshotDelta:
    """The rows to write and delete so the stored snapshot equals ``current``."""
    before = previous or EMPTY
    return SnapshotDelta(
        upsert_models=tuple(
            m for name, m in current.models.items() if before.models.get(name) != m
        ),
        delete_models=tuple(name for name in before.models if name not in current.models),
        upsert_versions=tuple(
            v for key, v in current.versions.items() if before.versions.get(key) != v
        ),
        delete_versions=tuple(key for key in before.versions if key not in current.versions),
    )
