"""Plain data shared by every stage of the pipeline: what was read, and what changed.

Everything here is a frozen dataclass over strings and ints, so detection, payloads and signing
can be tested without MLflow, disk or network.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class EventType(enum.StrEnum):
    """The event catalogue (names follow Databricks registry webhooks)."""

    REGISTERED_MODEL_CREATED = "REGISTERED_MODEL_CREATED"
    REGISTERED_MODEL_DELETED = "REGISTERED_MODEL_DELETED"
    REGISTERED_MODEL_RENAMED = "REGISTERED_MODEL_RENAMED"
    MODEL_VERSION_CREATED = "MODEL_VERSION_CREATED"
    MODEL_VERSION_TRANSITIONED_STAGE = "MODEL_VERSION_TRANSITIONED_STAGE"
    MODEL_VERSION_TRANSITIONED_TO_STAGING = "MODEL_VERSION_TRANSITIONED_TO_STAGING"
    MODEL_VERSION_TRANSITIONED_TO_PRODUCTION = "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"
    MODEL_VERSION_TRANSITIONED_TO_ARCHIVED = "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED"
    MODEL_VERSION_DELETED = "MODEL_VERSION_DELETED"
    MODEL_VERSION_TAG_SET = "MODEL_VERSION_TAG_SET"
    MODEL_VERSION_TAG_DELETED = "MODEL_VERSION_TAG_DELETED"
    MODEL_VERSION_ALIAS_CREATED = "MODEL_VERSION_ALIAS_CREATED"
    MODEL_VERSION_ALIAS_DELETED = "MODEL_VERSION_ALIAS_DELETED"
    # MLflow 3's prompt registry (prompts are registered models tagged mlflow.prompt.is_prompt).
    PROMPT_CREATED = "PROMPT_CREATED"
    PROMPT_DELETED = "PROMPT_DELETED"
    PROMPT_TAG_SET = "PROMPT_TAG_SET"
    PROMPT_TAG_DELETED = "PROMPT_TAG_DELETED"
    PROMPT_VERSION_CREATED = "PROMPT_VERSION_CREATED"
    PROMPT_VERSION_DELETED = "PROMPT_VERSION_DELETED"
    PROMPT_VERSION_TAG_SET = "PROMPT_VERSION_TAG_SET"
    PROMPT_VERSION_TAG_DELETED = "PROMPT_VERSION_TAG_DELETED"
    PROMPT_ALIAS_CREATED = "PROMPT_ALIAS_CREATED"
    PROMPT_ALIAS_DELETED = "PROMPT_ALIAS_DELETED"


# MLflow 3 native webhook names, accepted in the config as aliases of the canonical names.
NATIVE_EVENT_NAMES: Mapping[str, EventType] = MappingProxyType(
    {
        "registered_model.created": EventType.REGISTERED_MODEL_CREATED,
        "model_version.created": EventType.MODEL_VERSION_CREATED,
        "model_version_tag.set": EventType.MODEL_VERSION_TAG_SET,
        "model_version_tag.deleted": EventType.MODEL_VERSION_TAG_DELETED,
        "model_version_alias.created": EventType.MODEL_VERSION_ALIAS_CREATED,
        "model_version_alias.deleted": EventType.MODEL_VERSION_ALIAS_DELETED,
        "prompt.created": EventType.PROMPT_CREATED,
        "prompt_version.created": EventType.PROMPT_VERSION_CREATED,
        "prompt_tag.set": EventType.PROMPT_TAG_SET,
        "prompt_tag.deleted": EventType.PROMPT_TAG_DELETED,
        "prompt_version_tag.set": EventType.PROMPT_VERSION_TAG_SET,
        "prompt_version_tag.deleted": EventType.PROMPT_VERSION_TAG_DELETED,
        "prompt_alias.created": EventType.PROMPT_ALIAS_CREATED,
        "prompt_alias.deleted": EventType.PROMPT_ALIAS_DELETED,
    }
)


PROMPT_EVENTS: frozenset[EventType] = frozenset(
    e for e in EventType if e.value.startswith("PROMPT_")
)
"""The prompt registry's events: what "PROMPT_*" subscribes to. Off unless a webhook names them
(or "PROMPT_*"): only then does the watcher read prompts at all."""
# The model registry's events the detector emits (with PROMPT_EVENTS: every EventType). The
# config refuses a subscription to any other name, so that nobody waits for an event that can
# never come.
SUPPORTED_EVENTS: frozenset[EventType] = frozenset(EventType) - PROMPT_EVENTS

STAGE_EVENTS: frozenset[EventType] = frozenset(
    {
        EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING,
        EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
        EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED,
    }
)
STAGE_SPECIFIC_EVENTS: frozenset[EventType] = STAGE_EVENTS - {
    EventType.MODEL_VERSION_TRANSITIONED_STAGE
}
ALL_EVENTS: frozenset[EventType] = SUPPORTED_EVENTS - STAGE_SPECIFIC_EVENTS
"""What "*" subscribes to: every change of the model registry once. The stage-specific
transition events repeat the generic one, so a CI job would run twice per promotion; they are
for explicit subscriptions. Prompt events are not in it: "*" meant the model registry before
the watcher had them, and a subscription must not start receiving prompts on an upgrade."""
ALIAS_EVENTS: frozenset[EventType] = frozenset(
    {
        EventType.MODEL_VERSION_ALIAS_CREATED,
        EventType.MODEL_VERSION_ALIAS_DELETED,
        EventType.PROMPT_ALIAS_CREATED,
        EventType.PROMPT_ALIAS_DELETED,
    }
)
TAG_SET_EVENTS: frozenset[EventType] = frozenset(
    {EventType.MODEL_VERSION_TAG_SET, EventType.PROMPT_TAG_SET, EventType.PROMPT_VERSION_TAG_SET}
)
TAG_DELETED_EVENTS: frozenset[EventType] = frozenset(
    {
        EventType.MODEL_VERSION_TAG_DELETED,
        EventType.PROMPT_TAG_DELETED,
        EventType.PROMPT_VERSION_TAG_DELETED,
    }
)

NO_STAGE = "None"
"""MLflow's name for 'no stage' (it is the string "None", not null)."""


_EMPTY: Mapping[str, str] = MappingProxyType({})


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    if not mapping:
        return _EMPTY  # most versions have no tags: one shared empty mapping, not 100k
    return MappingProxyType({sys.intern(k): v for k, v in sorted(mapping.items())})


def _interned(obj: object, *names: str) -> None:
    """Intern the strings that repeat across 100k rows (model names, stages, users): a
    snapshot of a large registry then holds one copy of each instead of one per row."""
    for name in names:
        object.__setattr__(obj, name, sys.intern(getattr(obj, name)))


@dataclass(frozen=True, slots=True)
class VersionState:
    """One model version as read from the registry."""

    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    current_stage: str = NO_STAGE
    status: str = "READY"
    source: str = ""
    run_id: str = ""
    user_id: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Spelled out rather than through _interned: 200k versions are built by each full run
        # (the snapshot loaded, the registry read), and the loop by name cost twice as much.
        setattr_, intern = object.__setattr__, sys.intern
        setattr_(self, "tags", _frozen(self.tags))
        setattr_(self, "name", intern(self.name))
        setattr_(self, "current_stage", intern(self.current_stage))
        setattr_(self, "status", intern(self.status))
        setattr_(self, "user_id", intern(self.user_id))

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            "current_stage": self.current_stage,
            "status": self.status,
            "source": self.source,
            "run_id": self.run_id,
            "user_id": self.user_id,
            "description": self.description,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionState:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            creation_timestamp=int(data["creation_timestamp"]),
            last_updated_timestamp=int(data["last_updated_timestamp"]),
            current_stage=str(data.get("current_stage", NO_STAGE)),
            status=str(data.get("status", "READY")),
            source=str(data.get("source", "")),
            run_id=str(data.get("run_id", "")),
            user_id=str(data.get("user_id", "")),
            description=str(data.get("description", "")),
            tags=dict(data.get("tags", {})),
        )


@dataclass(frozen=True, slots=True)
class ModelState:
    """One registered model as read from the registry (aliases live here, not on versions)."""

    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str = ""
    user_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    """alias -> version"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _frozen(self.tags))
        object.__setattr__(self, "aliases", _frozen(self.aliases))
        _interned(self, "name", "user_id")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            "description": self.description,
            "user_id": self.user_id,
            "tags": dict(self.tags),
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelState:
        return cls(
            name=str(data["name"]),
            creation_timestamp=int(data["creation_timestamp"]),
            last_updated_timestamp=int(data["last_updated_timestamp"]),
            description=str(data.get("description", "")),
            user_id=str(data.get("user_id", "")),
            tags=dict(data.get("tags", {})),
            aliases=dict(data.get("aliases", {})),
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """A complete read of the watched part of the registry at one moment.

    Only ever built from a read that finished: a partial read is thrown away by the reader.
    """

    models: Mapping[str, ModelState]
    versions: Mapping[tuple[str, str], VersionState]
    read_at: int
    """Epoch milliseconds when the read finished."""


@dataclass(frozen=True, slots=True)
class SnapshotDelta:
    """What must change in the persisted snapshot to make it equal to a new observation."""

    upsert_models: tuple[ModelState, ...] = ()
    delete_models: tuple[str, ...] = ()
    upsert_versions: tuple[VersionState, ...] = ()
    delete_versions: tuple[tuple[str, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.upsert_models or self.delete_models or self.upsert_versions or self.delete_versions
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One change in the registry, ready to be delivered to every webhook that wants it."""

    event_id: str
    type: EventType
    model_name: str
    timestamp: int
    """Epoch milliseconds of the registry change where MLflow gives one, else of detection."""
    model_version: str | None = None
    version_creation_timestamp: int | None = None
    user_id: str = ""
    from_stage: str | None = None
    to_stage: str | None = None
    source: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    """The experiment of ``run_id`` (looked up once per run); None without a run, or when the
    run could not be read (gone, or not readable with the watcher's credentials)."""
    alias: str | None = None
    previous_version: str | None = None
    """For an alias that moved: the version it pointed to before."""
    tag_key: str | None = None
    tag_value: str | None = None
    previous_value: str | None = None
    """For a tag that changed or was deleted: its value before."""
    description: str | None = None
    tags: Mapping[str, str] | None = None
    """For created models and versions: their tags at creation."""
    previous_name: str | None = None
    """For a renamed model: its name before (``model_name`` is the new one)."""
    template: str | None = None
    """For a created prompt version: its template (a chat prompt's messages as JSON text)."""

    def __post_init__(self) -> None:
        if self.tags is not None:
            object.__setattr__(self, "tags", _frozen(self.tags))

    def to_dict(self) -> dict[str, Any]:
        """Every field, None included (the stored form; payloads choose what to send)."""
        return {
            "event_id": self.event_id,
            "type": self.type.value,
            "model_name": self.model_name,
            "timestamp": self.timestamp,
            "model_version": self.model_version,
            "version_creation_timestamp": self.version_creation_timestamp,
            "user_id": self.user_id,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "source": self.source,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "alias": self.alias,
            "previous_version": self.previous_version,
            "tag_key": self.tag_key,
            "tag_value": self.tag_value,
            "previous_value": self.previous_value,
            "description": self.description,
            "tags": None if self.tags is None else dict(self.tags),
            "previous_name": self.previous_name,
            "template": self.template,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            event_id=str(data["event_id"]),
            type=EventType(data["type"]),
            model_name=str(data["model_name"]),
            timestamp=int(data["timestamp"]),
            model_version=data.get("model_version"),
            version_creation_timestamp=data.get("version_creation_timestamp"),
            user_id=str(data.get("user_id") or ""),
            from_stage=data.get("from_stage"),
            to_stage=data.get("to_stage"),
            source=data.get("source"),
            run_id=data.get("run_id"),
            experiment_id=data.get("experiment_id"),
            alias=data.get("alias"),
            previous_version=data.get("previous_version"),
            tag_key=data.get("tag_key"),
            tag_value=data.get("tag_value"),
            previous_value=data.get("previous_value"),
            description=data.get("description"),
            tags=data.get("tags"),
            previous_name=data.get("previous_name"),
            template=data.get("template"),
        )


def make_event_id(
    registry: str,
    event_type: EventType,
    model_name: str,
    model_version: str | None,
    version_creation_timestamp: int | None,
    before: Any,
    after: Any,
    registry_timestamp: int,
) -> str:
    """A deterministic id: detecting the same change twice (after a crash) gives the same id."""
    material = json.dumps(
        [
            registry,
            event_type.value,
            model_name,
            model_version,
            version_creation_timestamp,
            before,
            after,
            registry_timestamp,
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


_DELIVERY_NAMESPACE = uuid.UUID("6f1c1b52-6d7e-4a0b-9d0e-4b1f5d6a8c21")


def make_delivery_id(event_id: str, webhook: str) -> str:
    """One id per (event, webhook), the same on every retry and redelivery."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{event_id}/{webhook}"))
