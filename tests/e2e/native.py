"""MLflow's own (native) webhooks in end-to-end tests: what MLflow 3.3+ sends for a change,
to compare the watcher's `mlflow` format with.

The session's MlflowServer runs with harness.NATIVE_WEBHOOKS_ENV, without which MLflow refuses
an http:// or loopback webhook URL. MLflow delivers from a thread pool after answering the
request that made the change, so a test waits for each delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness import MlflowServer, Receiver, wait_for
from watcher.hints import MODEL_EVENTS, PROMPT_EVENTS
from watcher.signing import verify_mlflow

NATIVE_SECRET = "native-webhook-secret-5b9d"

REGISTRY_EVENTS = MODEL_EVENTS
"""Every registry event MLflow 3 sends natively (mlflow.webhooks.types, prompts aside)."""
PROMPT_NATIVE_EVENTS = PROMPT_EVENTS
"""Every prompt registry event MLflow 3 sends natively (mlflow.webhooks.types)."""

NATIVE_PATH = "/native"


@dataclass
class NativeHook:
    """A native webhook registered on a server, and what it delivered to its receiver."""

    webhook_id: str
    receiver: Receiver
    secret: str

    def envelopes(self) -> list[dict[str, Any]]:
        """Every body MLflow sent to this webhook, each checked against its signature."""
        bodies = []
        for delivery in self.receiver.deliveries():
            if not delivery.path.startswith(NATIVE_PATH):
                continue
            problem = verify_mlflow(self.secret, delivery.headers, delivery.body)
            assert problem is None, f"MLflow's own delivery does not verify: {problem}"
            bodies.append(delivery.json)
        return bodies

    def sent(self, entity: str, action: str, name: str) -> list[dict[str, Any]]:
        """The ``data`` of each delivery of ``entity.action`` about model ``name``."""
        return [
            e["data"]
            for e in self.envelopes()
            if (e["entity"], e["action"]) == (entity, action) and e["data"].get("name") == name
        ]

    def wait(
        self, entity: str, action: str, name: str, count: int = 1, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """At least ``count`` deliveries of ``entity.action`` about ``name``: their data."""

        def enough() -> list[dict[str, Any]] | None:
            found = self.sent(entity, action, name)
            return found if len(found) >= count else None

        return list(wait_for(enough, timeout, f"{count} native {entity}.{action} for {name}"))


@contextmanager
def native_webhook(
    server: MlflowServer,
    receiver: Receiver | None = None,
    events: Sequence[str] = REGISTRY_EVENTS,
    secret: str = NATIVE_SECRET,
) -> Iterator[NativeHook]:
    """A native webhook on ``server`` posting to ``receiver`` (under /native, apart from the
    watcher's deliveries; by default to a receiver of its own, started and stopped here),
    deleted afterwards: the session's server is shared by the tests."""
    own = receiver is None
    target = Receiver() if receiver is None else receiver
    if own:
        target.start()
    client = server.client()
    created = client.create_webhook(
        name=f"native-{uuid.uuid4().hex[:8]}",
        url=f"{target.base_url}{NATIVE_PATH}",
        events=list(events),
        secret=secret,
    )
    try:
        yield NativeHook(created.webhook_id, target, secret)
    finally:
        client.delete_webhook(created.webhook_id)
        if own:
            target.stop()
