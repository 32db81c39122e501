"""The console through Flask's test client, on a real state: who gets in, the session, CSRF,
the security headers, read-only mode, escaping of user data and secrets kept out of every page,
bad parameters, and errors that leave it serving. What the pages show, and what the actions
write, on every backend: test_console_pages.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.console_helpers import (
    EVIL,
    PASSWORD,
    SECRETS,
    TOKEN,
    Setup,
    app_for,
    console_config,
    csrf_of,
    populate,
    signed_in,
)
from watcher.config import ConsoleConfig, Secret
from watcher.console.app import SECURITY_HEADERS
from watcher.console.auth import session_key
from watcher.console.views import EVENTS_PAGE, _events_page
from watcher.errors import StoreError
from watcher.store import DEAD, EventRow, Store


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """Three deliveries for a model with a hostile name in a SQLite state (the backend is
    not what these tests are about)."""
    with Store.open(tmp_path / "state.db") as store:
        yield populate(store)


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
    assert setup.count() == 3
    assert [r.delivery_id for r in setup.store.list_deliveries(status=DEAD)] == [setup.dead]


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
    assert setup.count(DEAD) == 1


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
    assert setup.count() == 3
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
    assert setup.count() == 3
    assert setup.count(DEAD) == 1
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


def test_an_unknown_delivery_is_a_404(setup: Setup) -> None:
    answer = signed_in(app_for(setup)).get("/deliveries/not-a-delivery")
    assert answer.status_code == 404
    assert "not-a-delivery" in answer.get_data(as_text=True)


# --------------------------------------------------------------------------- actions


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
    rows = [EventRow(f"e{i}", "T", "m", None, 100.0 - (i // 30), {}, {}) for i in range(150)]
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
