"""The console through Flask's test client: who gets in, CSRF, the security headers, read-only
mode, escaping of user data, secrets kept out of every page, filters, and the actions.

The store is a real SQLite state; the console's own queries (which the store gains in the same
change) are stood in for by ``ConsoleTestStore`` over the real tables, so the counts, the
redeliveries and the queued test events are the state's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from structlog.testing import capture_logs

from tests.store_helpers import attempts, deliveries_for, event, queue
from watcher.config import Config, ConsoleConfig, Secret, WebhookConfig
from watcher.console.app import SECURITY_HEADERS, create_app
from watcher.console.auth import session_key
from watcher.console.views import EVENTS_PAGE, _events_page
from watcher.errors import StoreError
from watcher.model import Event, make_delivery_id
from watcher.status import status_report
from watcher.store import DEAD, DELIVERED, PENDING, Attempt, DeliveryRow, NewDelivery, Store

NOW = 1_700_000_000.0
EVIL = "<img src=x onerror=alert(1)>"
TOKEN = "console-token-0123456789"
PASSWORD = "console-password-9876"
WEBHOOK_SECRET = "whsec-webhook-secret-4242"
HEADER_SECRET = "header-secret-7777"
SECRETS = (TOKEN, PASSWORD, WEBHOOK_SECRET, HEADER_SECRET)


# --------------------------------------------------------------------------- a stand-in store


@dataclass(frozen=True)
class Stats:
    webhook: str
    delivered_hour: int = 1
    delivered_day: int = 2
    attempts_day: int = 3
    success_rate: float | None = 0.5
    p50_ms: float | None = 12.0
    p95_ms: float | None = 80.0
    pending: int = 0
    dead: int = 0
    delivered: int = 0
    last_error: str | None = EVIL
    last_error_at: float | None = NOW


@dataclass(frozen=True)
class Bucket:
    start: float
    delivered: int
    failed: int
    dead: int


@dataclass(frozen=True)
class AttemptRow:
    attempted_at: float
    status_code: int | None
    error: str | None
    latency_ms: float
    response: str | None
    epoch: int | None = None


@dataclass(frozen=True)
class Detail:
    row: DeliveryRow
    event: Event
    request: dict[str, Any] | None
    attempts: list[AttemptRow]


@dataclass(frozen=True)
class EventRow:
    event_id: str
    type: str
    model_name: str
    model_version: str | None
    detected_at: float
    data: dict[str, Any]
    deliveries: dict[str, int] = field(default_factory=dict)


class ConsoleTestStore(Store):
    """A real SQLite state with the console's queries answered from its tables (their rows
    typed Any: the store's own row types are the store's part of the change)."""

    queued_tests: list[tuple[Event, str, str]]
    pages: list[Any]

    def webhook_stats(self, now: float) -> Any:
        return [Stats(name) for name in sorted(self.status_counts())]

    def delivery_chart(self, now: float, *, hours: int = 24) -> Any:
        start = now - now % 3600 - (hours - 1) * 3600
        return [Bucket(start + i * 3600, i % 3, i % 2, int(i == 5)) for i in range(hours)]

    def delivery_page(self, f: Any, *, before: int | None = None, limit: int = 50) -> Any:
        self.pages.append(f)
        rows = self.list_deliveries(status=f.status, webhook=f.webhook, model=f.model)[::-1]
        return rows[:limit], (limit if len(rows) > limit else None)

    def delivery_detail(self, delivery_id: str) -> Any:
        row = next((r for r in self.list_deliveries() if r.delivery_id == delivery_id), None)
        if row is None:
            return None
        found = next(e for e in self.recent_events(1000) if e.event_id == row.event_id)
        request = {
            "method": "POST",
            "url": "https://hooks.example/deploy?token=<redacted>",
            "headers": [["Authorization", "<redacted>"], ["X-Model", EVIL]],
            "body": json.dumps({"model": EVIL, "n": 1}),
        }
        tried = [
            AttemptRow(a.attempted_at, a.status_code, a.error, a.latency_ms, a.response)
            for a in attempts(self, delivery_id)
        ]
        return Detail(row, found, request, tried)

    def version_timeline(self, model: str, version: str | None) -> Any:
        return [
            _event_row(e)
            for e in self.recent_events(1000)
            if e.model_name == model and e.model_version == version
        ]

    def model_events(
        self,
        model: str | None,
        *,
        since: float | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> Any:
        rows = [_event_row(e) for e in self.recent_events(1000)]
        return [r for r in rows if model is None or r.model_name == model][:limit]

    def model_names(self, prefix: str = "", limit: int = 50) -> list[str]:
        return sorted({e.model_name for e in self.recent_events(1000)})[:limit]

    def queue_test_delivery(self, event: Event, webhook: str, delivery_id: str, now: float) -> None:
        self.queued_tests.append((event, webhook, delivery_id))
        queue(self, [event], [NewDelivery(delivery_id, event.event_id, webhook, event.model_name)])


def _event_row(e: Event) -> EventRow:
    return EventRow(
        e.event_id, e.type.value, e.model_name, e.model_version, NOW, e.to_dict(), {"dead": 1}
    )


# --------------------------------------------------------------------------- fixtures


def console_config(**changes: Any) -> Config:
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
    store: ConsoleTestStore
    delivered: str
    dead: str
    pending: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """Three deliveries to "deploy" for a model with a hostile name: delivered, dead, pending."""
    store = ConsoleTestStore.open(tmp_path / "state.db")
    store.queued_tests, store.pages = [], []
    events = [event(EVIL, "1"), event(EVIL, "2"), event("churn", "1")]
    rows = deliveries_for(events, "deploy")
    queue(store, events, rows)
    delivered, dead, pending = (r.delivery_id for r in rows)
    for delivery_id, status, code in ((delivered, DELIVERED, 200), (dead, DEAD, 404)):
        store.record_attempt(
            Attempt(delivery_id, NOW + 1, code, f"HTTP {code} {EVIL}", 5.0, response=EVIL),
            status=status,
            next_attempt_at=None,
        )
    yield Setup(store, delivered, dead, pending)
    store.close()


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


def pages(setup: Setup) -> list[str]:
    return ["/", "/deliveries", f"/deliveries/{setup.dead}", "/events", "/events?model=churn"]


def posts(setup: Setup) -> list[str]:
    return [
        f"/deliveries/{setup.dead}/redeliver",
        "/webhooks/deploy/redeliver-dead",
        "/webhooks/deploy/test",
        "/logout",
    ]


# --------------------------------------------------------------------------- access


def test_without_credentials_every_page_redirects_to_login_and_every_post_is_refused(
    setup: Setup,
) -> None:
    client = app_for(setup).test_client()
    for path in pages(setup):
        answer = client.get(path)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/login?next="), path
    csrf = csrf_of(client)
    for path in posts(setup):
        answer = client.post(path, data={"csrf_token": csrf})
        assert answer.status_code == 401, path
    assert setup.store.queued_tests == []
    assert setup.store.list_deliveries(status=DEAD)[0].delivery_id == setup.dead


def test_a_wrong_token_or_password_is_refused_and_signs_nobody_in(setup: Setup) -> None:
    client = app_for(setup).test_client()
    for form in ({"token": "nope"}, {"username": "alice", "password": "nope"}, {}):
        answer = client.post("/login", data={**form, "csrf_token": csrf_of(client)})
        assert answer.status_code == 401
        assert "Wrong credentials" in answer.get_data(as_text=True)
        assert client.get("/").status_code == 302


def test_a_token_or_a_user_and_password_sign_in(setup: Setup) -> None:
    app = app_for(setup)
    assert signed_in(app).get("/").status_code == 200
    client = app.test_client()
    answer = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_of(client)},
    )
    assert answer.status_code == 302
    assert client.get("/").status_code == 200


def test_login_goes_back_to_the_page_asked_for_but_never_to_another_site(setup: Setup) -> None:
    app = app_for(setup)
    for target, expected in (
        ("/events?model=churn", "/events?model=churn"),
        ("//evil.example", "/"),
    ):
        client = app.test_client()
        answer = client.post(
            "/login", data={"token": TOKEN, "next": target, "csrf_token": csrf_of(client)}
        )
        assert answer.headers["Location"] == expected


def test_a_bearer_token_reads_pages_but_cannot_post(setup: Setup) -> None:
    client = app_for(setup).test_client()
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 302
    answer = client.post(
        "/webhooks/deploy/redeliver-dead", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 401
    assert setup.store.list_deliveries(status=DEAD) != []


def test_the_trusted_header_signs_in_only_when_configured(setup: Setup) -> None:
    header = {"X-Forwarded-User": "bob@example.com"}
    plain = app_for(setup).test_client()
    assert plain.get("/", headers=header).status_code == 302
    behind_proxy = app_for(
        setup,
        console_config(token=None, username=None, password=None, trusted_header="X-Forwarded-User"),
    ).test_client()
    page = behind_proxy.get("/", headers=header)
    assert page.status_code == 200
    assert "bob@example.com" in page.get_data(as_text=True)
    assert behind_proxy.get("/").status_code == 302


def test_the_session_cookie_is_httponly_and_samesite_strict_and_secure_over_https(
    setup: Setup,
) -> None:
    app = app_for(setup)
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        client = app.test_client()
        page = client.get("/login", base_url=base)
        cookie = page.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert ("Secure" in cookie) is secure


def test_sign_out_ends_the_session(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    assert client.post("/logout", data={"csrf_token": csrf_of(client, "/")}).status_code == 302
    assert client.get("/").status_code == 302


def test_the_session_key_is_shared_by_replicas_and_changes_with_the_credential() -> None:
    one = ConsoleConfig(token=Secret("a-token", "env:T"))
    assert session_key(one) == session_key(ConsoleConfig(token=Secret("a-token", "env:U")))
    assert session_key(one) != session_key(ConsoleConfig(token=Secret("another", "env:T")))
    assert b"a-token" not in session_key(one)
    proxied = ConsoleConfig(trusted_header="X-Forwarded-User")
    assert session_key(proxied) != session_key(proxied)
    chosen = ConsoleConfig(token=Secret("a-token", "env:T"), session_key=Secret("k", "env:K"))
    assert session_key(chosen) != session_key(one)


# --------------------------------------------------------------------------- CSRF, headers


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    for path in posts(setup):
        for data in ({}, {"csrf_token": "forged"}):
            answer = client.post(path, data=data)
            assert answer.status_code == 403, path
    assert setup.store.queued_tests == []
    assert [r.delivery_id for r in setup.store.list_deliveries(status=DEAD)] == [setup.dead]
    assert client.get("/").status_code == 200  # still signed in


def test_every_answer_carries_the_security_headers(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    answers = [client.get(path) for path in pages(setup)]
    answers += [
        client.get("/login"),
        client.get("/static/console.css"),
        client.get("/deliveries/no-such-id"),
        client.get("/deliveries?status=bogus"),
        client.post("/webhooks/deploy/test"),
        app_for(setup).test_client().get("/"),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "frame-ancestors 'none'" in csp


def test_no_page_has_a_script_or_an_inline_style(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    for path in [*pages(setup), "/login"]:
        html = client.get(path).get_data(as_text=True)
        assert "<script" not in html, path
        assert "style=" not in html, path


# --------------------------------------------------------------------------- read-only


def test_read_only_shows_no_action_and_refuses_every_one(setup: Setup) -> None:
    client = signed_in(app_for(setup, read_only=True))
    for path in pages(setup):
        html = client.get(path).get_data(as_text=True)
        for form in ('id="redeliver"', 'class="redeliver-dead"', 'class="test-event"'):
            assert form not in html, path
    csrf = csrf_of(client, "/")
    for path in posts(setup)[:-1]:
        assert client.post(path, data={"csrf_token": csrf}).status_code == 403, path
    assert setup.store.queued_tests == []
    assert setup.store.list_deliveries(status=DEAD) != []
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302


def test_read_only_comes_from_the_config_unless_the_caller_says(setup: Setup) -> None:
    html = signed_in(app_for(setup, console_config(read_only=True))).get("/").get_data(as_text=True)
    assert 'class="test-event"' not in html
    html = signed_in(app_for(setup)).get("/").get_data(as_text=True)
    assert 'class="test-event"' in html


# --------------------------------------------------------------------------- user data, secrets


def test_a_hostile_model_name_is_text_on_every_page(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    for path in pages(setup):
        html = client.get(path).get_data(as_text=True)
        assert "<img" not in html, path
        assert "onerror=alert(1)&gt;" in html or path == "/events?model=churn", path
    html = client.get(f"/deliveries?model={EVIL}").get_data(as_text=True)
    assert "<img" not in html
    assert 'value="&lt;img src=x onerror=alert(1)&gt;"' in html


def test_no_secret_appears_in_any_page(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    htmls = [client.get(path).get_data(as_text=True) for path in [*pages(setup), "/login"]]
    htmls.append(client.get(f"/deliveries/{setup.delivered}").get_data(as_text=True))
    for html in htmls:
        for secret in SECRETS:
            assert secret not in html


# --------------------------------------------------------------------------- pages


def test_the_overview_counts_are_those_of_status(setup: Setup) -> None:
    html = signed_in(app_for(setup)).get("/").get_data(as_text=True)
    report = status_report(console_config(), setup.store, NOW)
    row = re.search(r'<tr data-webhook="deploy">(.*?)</tr>', html, re.S)
    assert row is not None
    for status in (DELIVERED, PENDING, DEAD):
        cell = re.search(rf'<td class="{status}">(\d+)</td>', row.group(1))
        assert cell is not None
        assert int(cell.group(1)) == report["deliveries"]["deploy"][status] == 1
    assert '<svg id="chart"' in html
    assert html.count('class="bar-dead"') == 1


def test_the_deliveries_page_lists_rows_with_links_and_passes_the_filters(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    html = client.get("/deliveries?status=dead&webhook=deploy&since=1h").get_data(as_text=True)
    assert f'data-delivery-id="{setup.dead}"' in html
    assert f'data-delivery-id="{setup.pending}"' not in html
    assert f'href="/deliveries/{setup.dead}"' in html
    wanted = setup.store.pages[-1]
    assert (wanted.status, wanted.webhook, wanted.since) == (DEAD, "deploy", NOW + 60 - 3600)
    client.get("/deliveries?event=model_version.created&until=2023-11-14T22:13:20Z")
    wanted = setup.store.pages[-1]
    assert wanted.event_type == "MODEL_VERSION_CREATED"
    assert wanted.until == NOW


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=bogus", "status: got 'bogus'"),
        ("since=yesterday-ish", "since: got 'yesterday-ish'"),
        ("until=13:99", "until: got '13:99'"),
        ("event=NOT_AN_EVENT", "event: got 'NOT_AN_EVENT'"),
        ("before=-3", "before: got '-3'"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_field_and_value(
    setup: Setup, query: str, named: str
) -> None:
    answer = signed_in(app_for(setup)).get(f"/deliveries?{query}")
    assert answer.status_code == 400
    assert named in answer.get_data(as_text=True).replace("&#39;", "'")


def test_a_bad_events_filter_is_a_400_too(setup: Setup) -> None:
    answer = signed_in(app_for(setup)).get("/events?since=soon")
    assert answer.status_code == 400
    assert "since: got" in answer.get_data(as_text=True)


def test_one_delivery_shows_its_event_request_and_attempts(setup: Setup) -> None:
    html = signed_in(app_for(setup)).get(f"/deliveries/{setup.dead}").get_data(as_text=True)
    assert f'<code id="delivery-id">{setup.dead}</code>' in html
    assert 'id="status" class="status-dead">dead<' in html
    assert 'class="timeline-event' in html
    assert (
        '<code id="request-url">https://hooks.example/deploy?token=&lt;redacted&gt;</code>' in html
    )
    assert "<th>Authorization</th><td>&lt;redacted&gt;</td>" in html
    pretty = re.search(r'<pre id="body-pretty">(.*?)</pre>', html, re.S)
    raw = re.search(r'<pre id="body-raw">(.*?)</pre>', html, re.S)
    assert pretty is not None
    assert raw is not None
    assert "\n  &#34;n&#34;: 1\n" in pretty.group(1)
    assert "&#34;n&#34;: 1}" in raw.group(1)
    assert '<td class="status-code">404</td>' in html
    assert 'id="redeliver"' in html


def test_an_unknown_delivery_is_a_404(setup: Setup) -> None:
    answer = signed_in(app_for(setup)).get("/deliveries/not-a-delivery")
    assert answer.status_code == 404
    assert "not-a-delivery" in answer.get_data(as_text=True)


def test_the_events_page_lists_events_by_model(setup: Setup) -> None:
    html = signed_in(app_for(setup)).get("/events?model=churn").get_data(as_text=True)
    assert 'class="event" data-model="churn"' in html
    assert "None → Production" in html


# --------------------------------------------------------------------------- actions


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
    assert "Queued again" in client.get(answer.headers["Location"]).get_data(as_text=True)


def test_redeliver_dead_queues_every_dead_delivery_of_the_webhook(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    answer = client.post(
        "/webhooks/deploy/redeliver-dead", data={"csrf_token": csrf_of(client, "/")}
    )
    assert answer.status_code == 302
    assert setup.store.list_deliveries(status=DEAD) == []
    assert "1 dead deliveries of deploy queued again" in client.get("/").get_data(as_text=True)


def test_a_test_event_is_queued_under_its_own_delivery_id(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    csrf = csrf_of(client, "/")
    first = client.post("/webhooks/deploy/test", data={"csrf_token": csrf})
    second = client.post(
        "/webhooks/deploy/test", data={"csrf_token": csrf, "event": "MODEL_VERSION_CREATED"}
    )
    assert first.status_code == second.status_code == 302
    (e1, hook1, id1), (e2, _, id2) = setup.store.queued_tests
    assert hook1 == "deploy"
    assert id1 == make_delivery_id(e1.event_id, "deploy")
    assert id1 != id2
    assert e2.type.value == "MODEL_VERSION_CREATED"
    assert first.headers["Location"] == f"/deliveries/{id1}"
    assert client.get(first.headers["Location"]).status_code == 200


def test_actions_on_an_unknown_webhook_or_delivery_are_404s(setup: Setup) -> None:
    client = signed_in(app_for(setup))
    csrf = csrf_of(client, "/")
    for path in (
        "/webhooks/nope/test",
        "/webhooks/nope/redeliver-dead",
        "/deliveries/0000000000000000/redeliver",
    ):
        assert client.post(path, data={"csrf_token": csrf}).status_code == 404, path
    answer = client.post("/webhooks/deploy/test", data={"csrf_token": csrf, "event": "NOPE"})
    assert answer.status_code == 400
    assert setup.store.queued_tests == []


def test_changing_the_credentials_signs_everybody_out(setup: Setup) -> None:
    key = Secret("a-session-key-of-its-own", "env:K")
    client = signed_in(app_for(setup, console_config(session_key=key)))
    cookie = client.get_cookie("watcher_console")
    assert cookie is not None
    rotated = app_for(setup, console_config(session_key=key, token=Secret("new", "env:T")))
    other = rotated.test_client()
    other.set_cookie("watcher_console", cookie.value)
    assert other.get("/").status_code == 302
    same = app_for(setup, console_config(session_key=key)).test_client()
    same.set_cookie("watcher_console", cookie.value)
    assert same.get("/").status_code == 200


def test_the_events_page_never_cuts_one_poll_in_two(setup: Setup) -> None:
    rows = [EventRow(f"e{i}", "T", "m", None, 100.0 - (i // 30), {}) for i in range(150)]
    page, before = _events_page(rows[: EVENTS_PAGE + 1])
    assert len(page) == 90
    assert before == 98.0
    page, before = _events_page(rows[: EVENTS_PAGE - 1])
    assert (len(page), before) == (EVENTS_PAGE - 1, None)


def test_a_state_that_cannot_be_read_or_a_failing_page_leaves_the_console_serving(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = signed_in(app_for(setup))

    def unavailable(now: float) -> Any:
        raise StoreError("the PostgreSQL state cannot be reached")

    def broken(model: str | None, **_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(setup.store, "webhook_stats", unavailable)
    monkeypatch.setattr(setup.store, "model_events", broken)
    with capture_logs() as logs:
        down = client.get("/")
        failed = client.get("/events")
    assert down.status_code == 503
    assert "the PostgreSQL state cannot be reached" in down.get_data(as_text=True)
    assert failed.status_code == 500
    assert "a bug" not in failed.get_data(as_text=True)
    assert [e["event"] for e in logs] == ["console.state_unavailable", "console.error"]
    assert client.get("/deliveries").status_code == 200
    for answer in (down, failed):
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_one_sign_in_works_on_every_replica_of_the_same_config(setup: Setup) -> None:
    """Replicas behind one load balancer: each process builds its own app from one config."""
    client = signed_in(app_for(setup))
    cookie = client.get_cookie("watcher_console")
    assert cookie is not None
    other_replica = app_for(setup).test_client()
    other_replica.set_cookie("watcher_console", cookie.value)
    assert other_replica.get("/").status_code == 200
