"""The baseline the watcher is measured against: a naive poller doing the same job.

Every poll reads the whole registry through ``MlflowClient`` (every registered model with its
aliases, then every version with its tags and stage), all pages, page size 1000 (MLflow's cap
for registered models; kept the same for versions), and diffs nothing cleverer than that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 1000


@dataclass(frozen=True)
class NaiveScan:
    seconds: float
    requests: int
    models: int
    versions: int


def full_scan(client: Any) -> NaiveScan:
    """One naive poll: every page of search_registered_models and search_model_versions."""
    started = time.monotonic()
    requests = 0
    models: dict[str, Any] = {}
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=PAGE_SIZE, page_token=token)
        requests += 1
        for model in page:
            models[model.name] = (model.last_updated_timestamp, dict(model.aliases or {}))
        token = page.token
        if not token:
            break
    versions: dict[tuple[str, str], Any] = {}
    token = None
    while True:
        page = client.search_model_versions(max_results=PAGE_SIZE, page_token=token)
        requests += 1
        for version in page:
            versions[(version.name, str(version.version))] = (
                version.current_stage,
                version.last_updated_timestamp,
                dict(version.tags or {}),
            )
        token = page.token
        if not token:
            break
    return NaiveScan(time.monotonic() - started, requests, len(models), len(versions))
