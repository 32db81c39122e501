"""Factories the suites share: a free port, a log that keeps what it is told, offset paging as
MLflow pages, a config loaded from TOML text, and the short names the detection tests give event
types. One of each, so a change to how the watcher logs, pages or loads is mended in one place."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from watcher.config import Config, load_config
from watcher.model import NO_STAGE, EventType, ModelState, VersionState

# The models' and the versions' lives.
M_CREATED, M_DELETED = EventType.REGISTERED_MODEL_CREATED, EventType.REGISTERED_MODEL_DELETED
M_RENAMED = EventType.REGISTERED_MODEL_RENAMED
V_CREATED, V_DELETED = EventType.MODEL_VERSION_CREATED, EventType.MODEL_VERSION_DELETED
# A stage transition: the generic event, and the specific one each target stage adds.
STAGE = EventType.MODEL_VERSION_TRANSITIONED_STAGE
TO_STAGING = EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING
TO_PRODUCTION = EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION
TO_ARCHIVED = EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED
# Tags and aliases, which move no timestamp.
TAG_SET, TAG_DELETED = EventType.MODEL_VERSION_TAG_SET, EventType.MODEL_VERSION_TAG_DELETED
ALIAS_CREATED = EventType.MODEL_VERSION_ALIAS_CREATED
ALIAS_DELETED = EventType.MODEL_VERSION_ALIAS_DELETED


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked; a test that races
    another process for it fails loudly at bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Record = tuple[str, str, dict[str, Any]]
LEVELS = ("debug", "info", "warning", "error", "exception", "critical")


class RecordingLog:
    """Stands in for the watcher's structured logger and keeps every line as
    (level, event, fields). Only the logger's levels exist, so a typo in the code under test
    fails loudly instead of being recorded."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def _record(self, level: str) -> Callable[..., None]:
        return lambda event, **fields: self.records.append((level, event, fields))

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level in LEVELS:
            return self._record(level)
        raise AttributeError(level)

    def named(self, event: str) -> list[Record]:
        """Every line logged as ``event``, whole."""
        return [r for r in self.records if r[1] == event]

    def events(self, event: str) -> list[dict[str, Any]]:
        """The fields of every line logged as ``event``."""
        return [fields for _, name, fields in self.named(event)]


def offset_page(rows: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    """Offset paging, as MLflow pages: the token is the offset of the next page."""
    start = int(token or 0)
    end = start + size
    return rows[start:end], (str(end) if end < len(rows) else None)


def write_config(tmp_path: Path, text: str) -> Path:
    """``text`` as the watcher.toml in ``tmp_path``."""
    path = tmp_path / "watcher.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    """The config ``text`` says, loaded as the watcher loads its file (``env`` as the
    environment; empty unless given)."""
    return load_config(write_config(tmp_path, text), {} if env is None else env)


def model_state(
    name: str = "fraud",
    *,
    created: int = 100,
    updated: int = 100,
    aliases: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    user: str = "owner",
) -> ModelState:
    """A registered model as MLflow answers it."""
    return ModelState(
        name=name,
        creation_timestamp=created,
        last_updated_timestamp=updated,
        description=description,
        user_id=user,
        tags=dict(tags or {}),
        aliases=dict(aliases or {}),
    )


def version_state(
    version: str,
    stage: str = NO_STAGE,
    *,
    name: str = "fraud",
    created: int = 1_000,
    updated: int = 2_000,
    user: str = "alice",
    tags: Mapping[str, str] | None = None,
    description: str = "",
    source: str | None = None,
    run_id: str | None = None,
) -> VersionState:
    """A version as MLflow answers it; the source and run default to ones named after it."""
    return VersionState(
        name=name,
        version=version,
        creation_timestamp=created,
        last_updated_timestamp=updated,
        current_stage=stage,
        user_id=user,
        source=f"models:/{name}/{version}" if source is None else source,
        run_id=f"run-{version}" if run_id is None else run_id,
        description=description,
        tags=dict(tags or {}),
    )
