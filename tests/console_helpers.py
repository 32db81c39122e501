"""What the console's tests share: a state with three deliveries for a model with a hostile
name (one delivered, one dead, one pending), the console's config with secrets no page may
show, and a signed-in test client."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.store_helpers import deliveries_for, event, queue
from watcher.config import Config, ConsoleConfig, Secret, WebhookConfig
from watcher.console.app import create_app
from watcher.store import DEAD, DELIVERED, Attempt, Store

NOW = 1_700_000_000.0
"""When the deliveries were queued; the console's clock says a minute later."""
EVIL = "<img src=x onerror=alert(1)>"
TOKEN = "console-token-0123456789"
PASSWORD = "console-password-9876"
WEBHOOK_SECRET = "whsec-webhook-secret-4242"
HEADER_SECRET = "header-secret-7777"
SECRETS = (TOKEN, PASSWORD, WEBHOOK_SECRET, HEADER_SECRET)
REQUEST_URL = "https://hooks.example/deploy?token=<redacted>"


def console_config(**changes: Any) -> Config:
    """Webhook "deploy" with a secret and a secret header; the console with a token and a
    user/password (``changes`` override the console's keys)."""
    values: dict[str, Any] = {
        "listen": ("127.0.0.1", 0),
        "token": Secret(TOKEN, "env:CONSOLE_TOKEN"),
        "username": "alice",
        "password": Secret(PASSWORD, "env:CONSOLE_PASSWORD"),
    }
    values.update(changes)
    hook = WebhookConfig(
        name="deploy",
        url="https://hooks.example/deploy",
        secret=Secret(WEBHOOK_SECRET, "env:DEPLOY_SECRET"),
        headers=(("X-Api-Key", Secret(HEADER_SECRET, "env:HEADER")),),
    )
    return Config(webhooks=(hook,), console=ConsoleConfig(**values))


@dataclass
class Setup:
    store: Store
    delivered: str
    dead: str
    pending: str

    def count(self, status: str | None = None) -> int:
        return len(self.store.list_deliveries(status=status))


def populate(store: Store) -> Setup:
    """Deliveries to "deploy": delivered and dead (model EVIL, each with one attempt whose
    error, answer and request carry EVIL too), and pending (model "churn")."""
    events = [event(EVIL, "1"), event(EVIL, "2"), event("churn", "1")]
    rows = deliveries_for(events, "deploy")
    queue(store, events, rows, now=NOW)
    delivered, dead, pending = (r.delivery_id for r in rows)
    sent = json.dumps(
        {
            "method": "POST",
            "url": REQUEST_URL,
            "headers": [["Authorization", "<redacted>"], ["X-Model", EVIL]],
            "body": json.dumps({"model": EVIL, "n": 1}),
        }
    )
    for delivery_id, status, code in ((delivered, DELIVERED, 200), (dead, DEAD, 404)):
        store.record_attempt(
            Attempt(
                delivery_id,
                NOW + 1,
                code,
                f"HTTP {code} {EVIL}",
                5.0,
                response=EVIL,
                request=sent,
            ),
            status=status,
            next_attempt_at=None,
        )
    return Setup(store, delivered, dead, pending)


def app_for(setup: Setup, config: Config | None = None, **kw: Any) -> Flask:
    app = create_app(config or console_config(), setup.store, clock=lambda: NOW + 60, **kw)
    app.testing = True
    return app


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    answer = client.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(client)})
    assert answer.status_code == 302
    return client
