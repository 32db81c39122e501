"""The request as the delivery log keeps it: every secret of the webhook redacted wherever it
appears (URL, headers, body, raw or encoded), Authorization always, signatures shown."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.e2e.harness import Receiver
from watcher.config import Secret, WebhookConfig
from watcher.deliver import REDACTED, Sender, redact_request
from watcher.model import EventType
from watcher.payloads import FORMATS, example_event
from watcher.signing import MLFLOW_SIGNATURE, SCHEMES, mlflow_signature

TEMPLATE = '{"what": {{ event.event | tojson }}, "model": {{ model_name | tojson }}}'

# No "<" or ">": a secret made of them could be spelled across "<redacted>" and the text
# beside it, which no redaction can rule out and no real secret does.
_TEXT = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="<>"
)
_HEADER_TEXT = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>")
plain_secret = st.text(_TEXT, min_size=8, max_size=40)
header_value = st.text(_HEADER_TEXT, min_size=8, max_size=40)
standard_secret = st.binary(min_size=24, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)


def forms(value: str) -> set[str]:
    """How a value would show in the log's JSON or in a string of it if it leaked."""
    return {
        value,
        quote_plus(value),
        quote(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def strings(record: dict[str, Any]) -> list[str]:
    return [record["url"], record["body"], *(v for _, v in record["headers"])]


@st.composite
def webhooks(draw: st.DrawFn) -> tuple[WebhookConfig, list[str]]:
    """A webhook of any format and scheme with every kind of secret set, and those secrets."""
    fmt = draw(st.sampled_from(FORMATS))
    scheme = draw(st.sampled_from(SCHEMES))
    keys = standard_secret if scheme == "standard" else plain_secret
    secret, old = draw(keys), draw(keys)
    password, header = draw(plain_secret), draw(header_value)
    webhook = WebhookConfig(
        name="deploy",
        url="http://127.0.0.1:9/hook",
        format=fmt,
        secret=Secret(secret, "test"),
        signature=scheme,
        previous_secrets=(Secret(old, "test"),),
        username="bot",
        password=Secret(password, "test"),
        headers=(("X-Api-Key", Secret(header, "test")),),
        template=TEMPLATE if fmt == "template" else None,
    )
    return webhook, [secret, old, password, header, f"bot:{password}"]


@given(webhooks(), st.sampled_from(list(EventType)))
def test_no_secret_of_any_format_is_in_the_logged_request(
    drawn: tuple[WebhookConfig, list[str]], kind: EventType
) -> None:
    webhook, secrets = drawn
    prepared = Sender().prepare(webhook, example_event(kind), "delivery-1")
    logged = redact_request(webhook, webhook.url, list(prepared.headers.items()), prepared.body)
    record = json.loads(logged)
    scaffold = " ".join(
        [REDACTED * 2, "method POST url headers body", *prepared.headers, webhook.url]
    )
    assume(not any(secret in scaffold for secret in secrets))
    basic = base64.b64encode(secrets[-1].encode()).decode()
    for secret in [*secrets, basic]:
        for form in forms(secret):
            assert form not in logged
            assert not any(form in text for text in strings(record))
    headers = dict(record["headers"])
    assert headers["Authorization"] == REDACTED
    assert headers["X-Api-Key"] == REDACTED


def test_signatures_are_shown_and_the_rest_of_the_request_is_as_sent() -> None:
    webhook = WebhookConfig(
        name="deploy",
        url="https://user:pw-in-url@ci.example.com/hook?token=abc123&job=x",
        secret=Secret("signing-secret-1", "test"),
        signature="mlflow",
    )
    prepared = Sender().prepare(webhook, example_event(EventType.MODEL_VERSION_CREATED), "d-1")
    record = json.loads(
        redact_request(webhook, webhook.url, list(prepared.headers.items()), prepared.body)
    )
    headers = dict(record["headers"])
    timestamp = int(headers["X-MLflow-Timestamp"])
    expected = mlflow_signature("signing-secret-1", "d-1", timestamp, prepared.body)
    assert headers[MLFLOW_SIGNATURE] == expected
    assert headers["Content-Type"] == "application/json"
    assert record["method"] == "POST"
    assert record["url"] == (
        f"https://user:{REDACTED}@ci.example.com/hook?token={REDACTED}&job={REDACTED}"
    )
    assert json.loads(record["body"]) == json.loads(prepared.body)


def test_a_url_from_the_environment_shows_only_its_host() -> None:
    url = "https://hooks.slack.com/services/T0/B0/xoxb-secret-path"
    webhook = WebhookConfig(name="slack", url=url, format="slack", url_is_secret=True)
    record = json.loads(redact_request(webhook, url, [("X-Echo", url)], url.encode()))
    assert record["url"] == f"https://hooks.slack.com/{REDACTED}"
    assert record["headers"] == [["X-Echo", REDACTED]]
    assert "xoxb-secret-path" not in json.dumps(record)


def test_a_sent_request_is_logged_with_the_headers_requests_added(receiver: Receiver) -> None:
    webhook = WebhookConfig(
        name="deploy",
        url=receiver.url,
        format="gitlab",
        secret=Secret("glptt-trigger+token/1", "test"),
        headers=(("X-Api-Key", Secret("key-123456", "test")),),
    )
    sender = Sender()
    try:
        result = sender.post(webhook, example_event(EventType.MODEL_VERSION_CREATED), "d-2")
    finally:
        sender.close()
    assert result.ok
    assert result.request is not None
    record = json.loads(result.request)
    (sent,) = receiver.deliveries()
    headers = dict(record["headers"])
    assert headers["Content-Length"] == str(len(sent.body))
    assert headers["X-Api-Key"] == REDACTED
    assert sent.headers["X-Api-Key"] == "key-123456"
    assert record["body"] == sent.body.decode().replace(
        quote_plus("glptt-trigger+token/1"), REDACTED
    )
    assert f"token={REDACTED}" in record["body"]
    assert "glptt" not in result.request


def test_a_body_that_cannot_be_rendered_sends_and_logs_nothing() -> None:
    webhook = WebhookConfig(name="t", url="http://127.0.0.1:9/", format="template", template="{{")
    result = Sender().post(webhook, example_event(EventType.MODEL_VERSION_CREATED), "d-3")
    assert result.permanent
    assert result.request is None
