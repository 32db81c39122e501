"""The console on the real store, on both backends: every page from the store's own console
queries, the overview's counts as ``status`` has them, paging, and the actions' writes.

The store's console queries land in the same change as the console; until both parts are
together these tests are skipped (test_console_web.py covers the console on its own).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.store_helpers import deliveries_for, event, queue
from watcher.config import Config, ConsoleConfig, Secret, WebhookConfig
from watcher.console.app import create_app
from watcher.status import status_report
from watcher.store import DEAD, DELIVERED, PENDING, Attempt, Store

pytestmark = pytest.mark.skipif(
    not hasattr(Store, "webhook_stats"), reason="the store's console queries are not here yet"
)

NOW = 1_700_000_000.0
EVIL = "<img src=x onerror=alert(1)>"
TOKEN = "console-token-on-the-real-store"
WEBHOOK_SECRET = "whsec-real-store-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = Config(
    webhooks=(
        WebhookConfig(
            name="deploy",
            url="https://hooks.example/deploy",
            secret=Secret(WEBHOOK_SECRET, "env:S"),
        ),
    ),
    console=ConsoleConfig(listen=("127.0.0.1", 0), token=Secret(TOKEN, "env:T")),
)


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def populated(store: Store) -> tuple[str, str, str]:
    """Deliveries to "deploy": delivered and dead (a hostile model name), and pending."""
    events = [event(EVIL, "1"), event(EVIL, "2"), event("churn", "1")]
    rows = deliveries_for(events, "deploy")
    queue(store, events, rows, now=NOW)
    delivered, dead, pending = (r.delivery_id for r in rows)
    sent = {
        "method": "POST",
        "url": "https://hooks.example/deploy",
        "headers": [["Authorization", "<redacted>"], ["X-Model", EVIL]],
        "body": json.dumps({"model": EVIL}),
    }
    for delivery_id, status, code in ((delivered, DELIVERED, 200), (dead, DEAD, 404)):
        extra: dict[str, Any] = {"request": json.dumps(sent)}
        store.record_attempt(
            Attempt(delivery_id, NOW + 1, code, f"HTTP {code}", 5.0, response=EVIL, **extra),
            status=status,
            next_attempt_at=None,
        )
    return delivered, dead, pending


def app_on(store: Store) -> Flask:
    app = create_app(CONFIG, store, clock=lambda: NOW + 60)
    app.testing = True
    return app


def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    client.post("/login", data={"token": TOKEN, "csrf_token": csrf.group(1)})
    return client


def csrf_of(client: FlaskClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").get_data(as_text=True))
    assert found is not None
    return found.group(1)


def test_every_page_renders_from_the_store_escaped_and_without_secrets(store: Store) -> None:
    delivered, dead, _ = populated(store)
    client = app_on(store).test_client()
    for path in (
        "/",
        "/deliveries",
        "/deliveries?status=dead&webhook=deploy&since=1d",
        f"/deliveries/{dead}",
        f"/deliveries/{delivered}",
        "/events",
        f"/events?model={EVIL}",
    ):
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 200, path
        html = answer.get_data(as_text=True)
        assert "<img" not in html, path
        assert WEBHOOK_SECRET not in html, path
        assert TOKEN not in html, path
    html = client.get(f"/deliveries/{dead}", headers=BEARER).get_data(as_text=True)
    assert '<td class="status-code">404</td>' in html
    assert "<th>Authorization</th><td>&lt;redacted&gt;</td>" in html
    assert html.count('class="timeline-event') == 1


def test_the_overview_counts_are_those_of_status(store: Store) -> None:
    populated(store)
    html = app_on(store).test_client().get("/", headers=BEARER).get_data(as_text=True)
    counts = status_report(CONFIG, store, NOW)["deliveries"]["deploy"]
    row = re.search(r'<tr data-webhook="deploy">(.*?)</tr>', html, re.S)
    assert row is not None
    for status in (DELIVERED, PENDING, DEAD):
        cell = re.search(rf'<td class="{status}">(\d+)</td>', row.group(1))
        assert cell is not None
        assert int(cell.group(1)) == counts[status] == 1
    assert '<svg id="chart"' in html


def test_filters_select_and_pages_follow_one_another(store: Store) -> None:
    events = [event("fraud", str(n)) for n in range(1, 61)]
    queue(store, events, deliveries_for(events, "deploy"), now=NOW)
    client = app_on(store).test_client()
    first = client.get("/deliveries?model=fraud", headers=BEARER).get_data(as_text=True)
    ids = re.findall(r'data-delivery-id="([^"]+)"', first)
    following = re.search(r'id="next-page" href="([^"]+)"', first)
    assert len(ids) == 50
    assert following is not None
    second = client.get(following.group(1).replace("&amp;", "&"), headers=BEARER)
    more = re.findall(r'data-delivery-id="([^"]+)"', second.get_data(as_text=True))
    assert len(more) == 10
    assert not set(ids) & set(more)
    assert 'id="next-page"' not in second.get_data(as_text=True)
    dead = client.get("/deliveries?status=dead", headers=BEARER).get_data(as_text=True)
    assert re.findall(r'data-delivery-id="([^"]+)"', dead) == []


def test_redeliver_requeues_the_same_delivery(store: Store) -> None:
    _, dead, _ = populated(store)
    client = signed_in(app_on(store))
    answer = client.post(f"/deliveries/{dead}/redeliver", data={"csrf_token": csrf_of(client)})
    assert answer.status_code == 302
    html = client.get(f"/deliveries/{dead}").get_data(as_text=True)
    assert 'id="status" class="status-pending">pending<' in html
    assert store.list_deliveries(status=DEAD) == []


def test_a_test_event_is_queued_and_shown(store: Store) -> None:
    populated(store)
    client = signed_in(app_on(store))
    answer = client.post("/webhooks/deploy/test", data={"csrf_token": csrf_of(client)})
    assert answer.status_code == 302
    html = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'id="status" class="status-pending">pending<' in html
    assert "fraud-model" in html
    assert len(store.list_deliveries(status=PENDING)) == 2
