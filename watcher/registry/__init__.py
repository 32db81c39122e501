"""Reading the registry: the only package that imports mlflow.

- :mod:`watcher.registry.readers`: the REST and client readers (the primitives of a read:
  paged searches and direct gets) and the checks that the client never creates or migrates a
  database it only reads.
- :mod:`watcher.registry.webhooks`: registering MLflow's native webhook for hints.

Everything the rest of the watcher uses is importable from here.
"""

from __future__ import annotations

from watcher.registry.readers import (
    PROMPT_TAG,
    ClientReader,
    Progress,
    Reader,
    ReaderSettings,
    ReadStats,
    RestReader,
    is_prompt,
    open_reader,
    registry_identity,
)
from watcher.registry.webhooks import register_hint_webhook

__all__ = [
    "PROMPT_TAG",
    "ClientReader",
    "Progress",
    "ReadStats",
    "Reader",
    "ReaderSettings",
    "RestReader",
    "is_prompt",
    "open_reader",
    "register_hint_webhook",
    "registry_identity",
]
