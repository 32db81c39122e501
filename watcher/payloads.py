"""Event -> the exact body bytes sent to a webhook, for each format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from watcher.model import Event

FORMATS = ("watcher",)


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


def watcher_payload(event: Event, webhook_id: str) -> dict[str, Any]:
    """The default shape: the fields MLflow users already know, plus event-specific ones."""
    payload: dict[str, Any] = {
        "event": event.type.value,
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "model_name": event.model_name,
        "model_version": event.model_version,
    }
    if event.from_stage is not None or event.to_stage is not None:
        payload["from_stage"] = event.from_stage
        payload["to_stage"] = event.to_stage
    payload["user_id"] = event.user_id
    payload["webhook_id"] = webhook_id
    if event.source:
        payload["source"] = event.source
    if event.run_id:
        payload["run_id"] = event.run_id
    return payload


def render(event: Event, webhook_id: str, fmt: str = "watcher") -> Rendered:
    if fmt != "watcher":
        raise ValueError(f"unknown format {fmt!r}")
    body = json.dumps(watcher_payload(event, webhook_id), separators=(",", ":"))
    return Rendered(body=body.encode("utf-8"), content_type="application/json")
