"""The delivery console in a real headless Chromium, against a real MLflow server, a real
receiver and the running daemon that serves the console (issue #13's browser tests 1-4)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import Browser

from tests.e2e.browser import Console
from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import (
    SECRET,
    STAGE_EVENT,
    Daemon,
    Receiver,
    ReceiverBehaviour,
    run_watcher,
    wait_for,
    watcher_env,
)
from tests.helpers import free_port

CONSOLE_TOKEN = "console-token-9d2e71f0"
API_KEY = "api-key-value-5b8e0c"
PASSWORD = "basic-password-c31a4d"
METRICS_TOKEN = "metrics-token-77aa19"
SECRETS = (CONSOLE_TOKEN, API_KEY, PASSWORD, METRICS_TOKEN, SECRET)
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_TAG = "<script>alert(2)</script>"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"


@dataclass
class Served:
    """A daemon serving the console at ``base``, its probes at ``probes``."""

    daemon: Daemon
    config: Path
    env: dict[str, str]
    base: str
    probes: str

    def status(self) -> dict[str, Any]:
        done = run_watcher("status", "--json", "-c", str(self.config), env=self.env)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def deliveries(self) -> list[dict[str, Any]]:
        done = run_watcher("deliveries", "--json", "-c", str(self.config), env=self.env)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def console_config(config_for: ConfigFor, models: str, console: int, server: int) -> Path:
    """One webhook "deploy" with a signing secret, an API key header and a basic-auth password
    (secrets the pages must never show), the console on ``console`` and the probes and
    /metrics on ``server``."""
    return config_for(
        models,
        events=[STAGE_EVENT, "MODEL_VERSION_TAG_SET"],
        extra=(
            f'\n[server]\nlisten = "127.0.0.1:{server}"\nmetrics_token_env = "E2E_METRICS_TOKEN"\n'
            f'\n[console]\nlisten = "127.0.0.1:{console}"\ntoken_env = "E2E_CONSOLE_TOKEN"\n'
        ),
        webhook_extra=(
            'headers = { "X-Api-Key" = "${E2E_API_KEY}" }\n'
            'username = "ci"\npassword_env = "E2E_PASSWORD"\n'
        ),
    )


def serve(config_for: ConfigFor, models: str) -> Iterator[Served]:
    console, server = free_port(), free_port()
    config = console_config(config_for, models, console, server)
    env = watcher_env(
        {
            "E2E_CONSOLE_TOKEN": CONSOLE_TOKEN,
            "E2E_API_KEY": API_KEY,
            "E2E_PASSWORD": PASSWORD,
            "E2E_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    with Daemon(config, env) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)  # the baseline: what the test changes after it is an event
        base = f"http://127.0.0.1:{console}"
        wait_for(lambda: _answers(base + "/login"), 30, "the console to answer")
        yield Served(daemon, config, env, base, f"http://127.0.0.1:{server}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def served(config_for: ConfigFor, model_name: str) -> Iterator[Served]:
    yield from serve(config_for, model_name)


@pytest.fixture
def console(browser: Browser, served: Served) -> Iterator[Console]:
    page = Console(browser, served.base)
    yield page
    page.close()


def transition(client: Any, name: str, version: str, stage: str = "Staging") -> None:
    client.transition_model_version_stage(name, version, stage)


def set_filter(console: Console, name: str, value: str) -> None:
    """Fill a field of the deliveries filter form, whether a select or a text input."""
    field = f"form#filters [name={name}]"
    tag = console.page.eval_on_selector(field, "el => el.tagName")
    if tag == "SELECT":
        console.page.select_option(field, value)
    else:
        console.page.fill(field, value)


def test_overview_shows_the_counts_status_reports(
    console: Console, served: Served, client: Any, model_name: str, receiver: Receiver
) -> None:
    create_versions(client, model_name, 2)
    transition(client, model_name, "1")
    transition(client, model_name, "2")
    receiver.wait_for_count(2)
    wait_for(lambda: served.status()["deliveries"]["deploy"]["delivered"] == 2, 30, "2 delivered")
    report = served.status()

    console.login_with_token(CONSOLE_TOKEN)
    visit = console.open("/")
    assert visit.status == 200
    row = 'tr[data-webhook="deploy"]'
    for column in ("delivered", "pending", "dead"):
        shown = console.text(f"{row} td.{column}")
        assert int(shown) == report["deliveries"]["deploy"][column], column
    assert int(console.text(f"{row} td.day")) == 2
    assert console.text(f"{row} td.success").startswith("100")
    assert report["registry"] in console.text("#registry")
    assert console.page.query_selector("svg#chart") is not None
    assert console.errors == []


def test_a_dead_delivery_is_found_read_and_redelivered_under_its_id(
    console: Console, served: Served, client: Any, model_name: str, receiver: Receiver
) -> None:
    receiver.behaviour = ReceiverBehaviour(status=404, body=b"no job named deploy-fraud here")
    create_versions(client, model_name, 1)
    transition(client, model_name, "1")
    receiver.wait_for_count(1)
    wait_for(lambda: served.status()["dead"] == 1, 30, "a dead delivery")

    console.login_with_token(CONSOLE_TOKEN)
    console.open("/deliveries")
    set_filter(console, "status", "dead")
    set_filter(console, "model", model_name)
    console.submit("form#filters")
    rows = console.page.query_selector_all("#deliveries tr[data-delivery-id]")
    assert len(rows) == 1
    delivery_id = rows[0].get_attribute("data-delivery-id")
    assert delivery_id
    with console.page.expect_navigation():
        rows[0].query_selector("a.delivery").click()  # type: ignore[union-attr]

    assert console.text("#delivery-id") == delivery_id
    assert "dead" in console.text("#status")
    attempts = console.page.query_selector_all("#attempts tr.attempt")
    assert len(attempts) == 1
    assert console.text("#attempts tr.attempt td.status-code") == "404"
    assert "no job named deploy-fraud" in console.text("#attempts tr.attempt td.response")
    assert receiver.deliveries()[0].header(DELIVERY_ID_HEADER) == delivery_id

    receiver.behaviour = ReceiverBehaviour()  # the receiver is fixed
    console.submit("form#redeliver")

    def redelivered() -> bool:
        console.open(f"/deliveries/{delivery_id}")
        codes = [c.inner_text().strip() for c in console.page.query_selector_all("td.status-code")]
        return sorted(codes) == ["200", "404"]

    wait_for(redelivered, 30, "the new attempt on the page", interval=0.5)
    assert "delivered" in console.text("#status")
    sent = [d.header(DELIVERY_ID_HEADER) for d in receiver.deliveries()]
    assert sent == [delivery_id, delivery_id]
    assert [d.answered for d in receiver.deliveries()] == [404, 200]
    assert console.errors == []


@pytest.fixture
def xss_served(config_for: ConfigFor) -> Iterator[Served]:
    yield from serve(config_for, XSS_NAME)


def test_user_data_renders_as_text_and_runs_no_script(
    browser: Browser, xss_served: Served, client: Any, receiver: Receiver
) -> None:
    client.create_registered_model(XSS_NAME, tags={"owner": XSS_TAG})
    client.create_model_version(XSS_NAME, "s3://bucket/xss/1", tags={"note": XSS_TAG})
    client.set_model_version_tag(XSS_NAME, "1", "gate", XSS_TAG)
    transition(client, XSS_NAME, "1")
    receiver.wait_for_count(1, event=STAGE_EVENT)
    wait_for(lambda: xss_served.status()["pending"] == 0, 30, "the outbox to drain")
    ids = [d["delivery_id"] for d in xss_served.deliveries()]
    assert ids

    console = Console(browser, xss_served.base)
    try:
        console.login_with_token(CONSOLE_TOKEN)
        pages = ["/", "/deliveries", f"/events?model={quote(XSS_NAME)}"]
        pages += [f"/deliveries/{i}" for i in ids]
        for path in pages:
            visit = console.open(path)
            assert visit.status == 200, path
            assert XSS_NAME in console.page.inner_text("body"), path
            assert console.page.query_selector_all('img[src="x"]') == [], path
        # The tag value is in the event's body, shown as text too.
        console.open(f"/deliveries/{ids[-1]}")
        assert XSS_TAG in console.page.inner_text("body")
        assert console.page.evaluate("document.querySelectorAll('script').length") == 0
        assert console.dialogs == []
        assert console.errors == []
    finally:
        console.close()


def test_nothing_without_credentials_or_csrf_and_no_secret_on_any_page(
    browser: Browser, served: Served, client: Any, model_name: str, receiver: Receiver
) -> None:
    create_versions(client, model_name, 1)
    transition(client, model_name, "1")
    receiver.wait_for_count(1)
    wait_for(lambda: served.status()["pending"] == 0, 30, "the outbox to drain")
    delivery_id = served.deliveries()[0]["delivery_id"]
    before = served.deliveries()

    stranger = browser.new_context()
    try:
        api = stranger.request
        for path in ("/", "/deliveries", f"/deliveries/{delivery_id}", "/events"):
            answer = api.get(served.base + path, max_redirects=0)
            assert answer.status in (302, 303, 401), path
            assert CONSOLE_TOKEN not in answer.text()
        for path in (
            f"/deliveries/{delivery_id}/redeliver",
            "/webhooks/deploy/redeliver-dead",
            "/webhooks/deploy/test",
        ):
            assert api.post(served.base + path, max_redirects=0).status in (401, 403), path
        wrong = api.get(
            served.base + "/", headers={"Authorization": "Bearer not-the-token"}, max_redirects=0
        )
        assert wrong.status in (302, 303, 401)
    finally:
        stranger.close()

    console = Console(browser, served.base)
    try:
        console.login_with_token(CONSOLE_TOKEN)
        # Logged in, but a POST without the CSRF token is refused and changes nothing.
        for path in (f"/deliveries/{delivery_id}/redeliver", "/webhooks/deploy/test"):
            refused = console.context.request.post(served.base + path, max_redirects=0)
            assert refused.status in (400, 403), path
        served.daemon.wait_polls(2)
        assert served.deliveries() == before
        assert len(receiver.deliveries()) == 1

        # The same action from the page (with its token) is carried out: the test event
        # reaches the receiver.
        visit = console.open("/")
        headers = {k.lower(): v for k, v in visit.headers.items()}
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"].upper() == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        console.submit('tr[data-webhook="deploy"] form.test-event')
        receiver.wait_for_count(2)
        assert "X-Api-Key" in receiver.deliveries()[-1].headers

        for path in ("/", "/deliveries", f"/deliveries/{delivery_id}", "/events"):
            assert console.open(path).status == 200
        for html in console.html:
            for secret in SECRETS:
                assert secret not in html
        assert "&lt;redacted&gt;" in "".join(console.html)
    finally:
        console.close()

    # The probes stay open; /metrics keeps its own token, which the console's does not open.
    assert requests.get(served.probes + "/healthz", timeout=5).status_code == 200
    assert requests.get(served.probes + "/metrics", timeout=5).status_code == 401
    with_console_token = requests.get(
        served.probes + "/metrics",
        headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"},
        timeout=5,
    )
    assert with_console_token.status_code == 401


def test_a_cron_install_serves_the_console_on_its_state_file(
    browser: Browser, config_for: ConfigFor, model_name: str, client: Any, receiver: Receiver
) -> None:
    """No daemon: `run --once` from cron, and `mlflow-watcher console` beside it. An action
    is a write to the state that the next `run --once` carries out."""
    port = free_port()
    config = console_config(config_for, model_name, port, free_port())
    env = watcher_env({"E2E_CONSOLE_TOKEN": CONSOLE_TOKEN, "E2E_API_KEY": API_KEY})
    env["E2E_PASSWORD"] = PASSWORD
    env["E2E_METRICS_TOKEN"] = METRICS_TOKEN
    assert run_watcher("run", "--once", "-c", str(config), env=env).returncode == 0
    create_versions(client, model_name, 1)
    transition(client, model_name, "1")
    receiver.behaviour = ReceiverBehaviour(status=404, body=b"gone")
    assert run_watcher("run", "--once", "-c", str(config), env=env).returncode != 0
    assert [d.answered for d in receiver.deliveries()] == [404]
    delivery_id = receiver.deliveries()[0].header(DELIVERY_ID_HEADER)

    server = ConsoleCommand(config, env, f"http://127.0.0.1:{port}")
    with server:
        console = Console(browser, server.base)
        try:
            console.login_with_token(CONSOLE_TOKEN)
            console.open(f"/deliveries/{delivery_id}")
            assert "dead" in console.text("#status")
            console.submit("form#redeliver")
            receiver.behaviour = ReceiverBehaviour()
            # The lock of the state file is not the console's: cron's run goes on beside it.
            done = run_watcher("run", "--once", "-c", str(config), env=env)
            assert done.returncode == 0, done.stderr
            console.open(f"/deliveries/{delivery_id}")
            assert "delivered" in console.text("#status")
            codes = [c.inner_text() for c in console.page.query_selector_all("td.status-code")]
            assert sorted(code.strip() for code in codes) == ["200", "404"]
        finally:
            console.close()
    assert [d.header(DELIVERY_ID_HEADER) for d in receiver.deliveries()] == [delivery_id] * 2


class ConsoleCommand:
    """`mlflow-watcher console` as a child process."""

    def __init__(self, config: Path, env: dict[str, str], base: str) -> None:
        self.config, self.env, self.base = config, env, base
        self.proc: Any = None

    def __enter__(self) -> ConsoleCommand:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "console", "-c", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not _answers(self.base + "/login"):
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("the console command did not answer")
            time.sleep(0.1)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=15) == 0
