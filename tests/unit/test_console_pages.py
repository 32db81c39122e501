"""What the console's pages show and its actions write, on every backend: the overview's counts
as ``status`` has them, the deliveries filtered and paged, one delivery with its request and
attempts, the events by model, and redeliver, redeliver-dead and the test event as state
writes."""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from tests.console_helpers import (
    EVIL,
    NOW,
    SECRETS,
    TOKEN,
    Setup,
    app_for,
    console_config,
    csrf_of,
    populate,
    signed_in,
)
from tests.store_helpers import deliveries_for, event, queue
from watcher.model import make_delivery_id
from watcher.status import status_report
from watcher.store import DEAD, DELIVERED, PENDING, Store

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(any_store: Store) -> Setup:
    return populate(any_store)


def ids_in(html: str) -> list[str]:
    return re.findall(r'<tr data-delivery-id="([^"]+)"', html)


def test_every_page_renders_from_the_store_escaped_and_without_secrets(setup: Setup) -> None:
    client = app_for(setup).test_client()
    for path in (
        "/",
        "/deliveries",
        f"/deliveries/{setup.dead}",
        f"/deliveries/{setup.delivered}",
        f"/deliveries/{setup.pending}",
        "/events",
        f"/events?model={EVIL}",
    ):
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 200, path
        html = answer.get_data(as_text=True)
        assert "<img" not in html, path
        assert "onerror=alert(1)&gt;" in html or path.endswith(setup.pending), path
        for secret in SECRETS:
            assert secret not in html, path


def test_the_overview_counts_are_those_of_status(setup: Setup) -> None:
    html = app_for(setup).test_client().get("/", headers=BEARER).get_data(as_text=True)
    report = status_report(console_config(), setup.store, NOW)
    row = re.search(r'<tr data-webhook="deploy">(.*?)</tr>', html, re.S)
    assert row is not None
    for status in (DELIVERED, PENDING, DEAD):
        cell = re.search(rf'<td class="{status}">(\d+)</td>', row.group(1))
        assert cell is not None
        assert int(cell.group(1)) == report["deliveries"]["deploy"][status] == 1
    assert '<td class="day">1</td>' in row.group(1)
    assert '<td class="success">50.0%</td>' in row.group(1)
    assert "HTTP 404 &lt;img" in row.group(1)
    assert '<svg id="chart"' in html
    assert html.count('class="bar-dead"') == 1
    recent = re.search(r'<table id="recent">(.*?)</table>', html, re.S)
    assert recent is not None
    assert sorted(ids_in(recent.group(1))) == sorted([setup.delivered, setup.dead, setup.pending])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=dead&webhook=deploy", ["dead"]),
        ("status=pending", ["pending"]),
        ("model=churn", ["pending"]),
        (f"model={EVIL}", ["delivered", "dead"]),
        ("webhook=other", []),
        ("event=MODEL_VERSION_TRANSITIONED_STAGE", ["delivered", "dead", "pending"]),
        ("event=model_version.created", []),
        ("since=1h", ["delivered", "dead", "pending"]),
        ("since=2023-11-14T22:13:21Z", []),
        ("until=2023-11-14T22:13:20Z", []),
        ("until=2023-11-14T22:13:21", ["delivered", "dead", "pending"]),
    ],
)
def test_the_filters_select_deliveries(setup: Setup, query: str, expected: list[str]) -> None:
    """The deliveries were queued at NOW (2023-11-14T22:13:20Z); the console's clock says a
    minute later."""
    html = app_for(setup).test_client().get(f"/deliveries?{query}", headers=BEARER)
    assert html.status_code == 200
    wanted = [getattr(setup, name) for name in expected]
    assert sorted(ids_in(html.get_data(as_text=True))) == sorted(wanted)


def test_pages_follow_one_another_newest_first(setup: Setup) -> None:
    events = [event("fraud", str(n)) for n in range(1, 61)]
    queue(setup.store, events, deliveries_for(events, "deploy"), now=NOW + 10)
    client = app_for(setup).test_client()
    first = client.get("/deliveries?model=fraud", headers=BEARER).get_data(as_text=True)
    following = re.search(r'id="next-page" href="([^"]+)"', first)
    assert following is not None
    second = client.get(following.group(1).replace("&amp;", "&"), headers=BEARER)
    more = second.get_data(as_text=True)
    expected = [make_delivery_id(e.event_id, "deploy") for e in reversed(events)]
    assert ids_in(first) + ids_in(more) == expected
    assert len(ids_in(first)) == 50
    assert 'id="next-page"' not in more


def test_one_delivery_shows_its_event_request_and_attempts(setup: Setup) -> None:
    html = signed_in(app_for(setup)).get(f"/deliveries/{setup.dead}").get_data(as_text=True)
    assert f'<code id="delivery-id">{setup.dead}</code>' in html
    assert 'id="status" class="status-dead">dead<' in html
    assert html.count('<tr class="timeline-event') == 1
    assert '<dd class="to-stage">Production</dd>' in html
    url = '<code id="request-url">https://hooks.example/deploy?token=&lt;redacted&gt;</code>'
    assert url in html
    assert "<th>Authorization</th><td>&lt;redacted&gt;</td>" in html
    pretty = re.search(r'<pre id="body-pretty">(.*?)</pre>', html, re.S)
    raw = re.search(r'<pre id="body-raw">(.*?)</pre>', html, re.S)
    assert pretty is not None
    assert raw is not None
    assert "\n  &#34;n&#34;: 1\n" in pretty.group(1)
    assert "&#34;n&#34;: 1}" in raw.group(1)
    attempt = re.search(r'<tr class="attempt">(.*?)</tr>', html, re.S)
    assert attempt is not None
    assert '<td class="status-code">404</td>' in attempt.group(1)
    assert '<td class="latency">5 ms</td>' in attempt.group(1)
    assert "&lt;img src=x onerror=alert(1)&gt;</pre>" in attempt.group(1)
    assert 'id="redeliver"' in html


def test_a_pending_delivery_shows_its_next_retry_and_no_request_yet(setup: Setup) -> None:
    html = signed_in(app_for(setup)).get(f"/deliveries/{setup.pending}").get_data(as_text=True)
    assert '<dd id="next-retry">2023-11-14T22:13:20Z</dd>' in html
    assert "Not sent yet" in html
    assert "No attempt yet." in html


def test_the_events_page_lists_events_by_model(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    html = client.get("/events?model=churn").get_data(as_text=True)
    assert html.count('<tr class="event" data-model="churn"') == 1
    assert 'data-model="&lt;img' not in html
    assert "None → Production" in html
    assert ">1 pending</a>" in html
    every = client.get("/events?since=1d").get_data(as_text=True)
    assert every.count('<tr class="event"') == 3


def test_redeliver_queues_the_same_delivery_again_and_logs_it(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    with capture_logs() as logs:
        answer = client.post(
            f"/deliveries/{setup.dead}/redeliver", data={"csrf_token": csrf_of(client, "/")}
        )
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/deliveries/{setup.dead}"
    row = next(r for r in setup.store.list_deliveries() if r.delivery_id == setup.dead)
    assert (row.status, row.next_attempt_at) == (PENDING, NOW + 60)
    action = [entry for entry in logs if entry["event"] == "console.action"]
    assert action == [
        {
            "event": "console.action",
            "log_level": "info",
            "action": "redeliver",
            "user": "token",
            "target": setup.dead,
            "count": 1,
        }
    ]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Queued again" in page
    assert 'id="status" class="status-pending">pending<' in page


def test_redeliver_dead_queues_every_dead_delivery_of_the_webhook(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    answer = client.post(
        "/webhooks/deploy/redeliver-dead", data={"csrf_token": csrf_of(client, "/")}
    )
    assert answer.status_code == 302
    assert setup.count(DEAD) == 0
    assert setup.count(PENDING) == 2
    assert "1 dead deliveries of deploy queued again" in client.get("/").get_data(as_text=True)


def test_a_test_event_is_queued_under_its_own_delivery_id(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    csrf = csrf_of(client, "/")
    first = client.post("/webhooks/deploy/test", data={"csrf_token": csrf})
    second = client.post(
        "/webhooks/deploy/test", data={"csrf_token": csrf, "event": "MODEL_VERSION_CREATED"}
    )
    assert first.status_code == second.status_code == 302
    ids = [answer.headers["Location"].rpartition("/")[2] for answer in (first, second)]
    assert ids[0] != ids[1]
    details = [setup.store.delivery_detail(i) for i in ids]
    for delivery_id, detail in zip(ids, details, strict=True):
        assert detail is not None
        assert (detail.row.webhook, detail.row.status) == ("deploy", PENDING)
        assert delivery_id == make_delivery_id(detail.event.event_id, "deploy")
        assert detail.event.model_name == "fraud-model"
    assert details[1] is not None
    assert details[1].event.type.value == "MODEL_VERSION_CREATED"
    assert setup.count(PENDING) == 3
    page = client.get(first.headers["Location"]).get_data(as_text=True)
    assert 'id="status" class="status-pending">pending<' in page


def test_actions_on_an_unknown_webhook_or_delivery_are_404s(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    csrf = csrf_of(client, "/")
    for path in (
        "/webhooks/nope/test",
        "/webhooks/nope/redeliver-dead",
        "/deliveries/00000000-0000-0000-0000-000000000000/redeliver",
    ):
        assert client.post(path, data={"csrf_token": csrf}).status_code == 404, path
    answer = client.post("/webhooks/deploy/test", data={"csrf_token": csrf, "event": "NOPE"})
    assert answer.status_code == 400
    assert setup.count() == 3
    assert setup.count(DEAD) == 1
