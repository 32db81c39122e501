"""The HTTP side of delivery: render, sign and POST one delivery, and read what came back.

The only code that sends webhooks; ``Deliverer`` decides what to send and when, the
``test-webhook`` command sends one by hand, both through ``Sender``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

import requests

from watcher.config import TOKEN_FORMATS, WebhookConfig
from watcher.deliver.guard import GuardedAdapter, refused_address
from watcher.deliver.policy import Result, parse_retry_after
from watcher.model import Event
from watcher.payloads import (
    NO_CONTEXT,
    FormatOptions,
    PayloadContext,
    TemplateError,
    compile_template,
    render,
)
from watcher.signing import sign

RESPONSE_SNIPPET = 200
"""Characters of a response body kept (whitespace collapsed) in the delivery log and errors."""
_SNIPPET_BYTES = 512
"""Bytes read to find them: room for collapsed whitespace and multi-byte characters."""
USER_AGENT = "mlflow-registry-watcher"


@dataclass(frozen=True)
class Prepared:
    """The exact bytes and headers of one attempt."""

    body: bytes
    headers: dict[str, str]


def format_options(webhook: WebhookConfig, context: PayloadContext = NO_CONTEXT) -> FormatOptions:
    """How a webhook's bodies are rendered; its template compiled once (validated at load);
    ``context`` is what the ``[mlflow]`` section adds to every payload (links, workspace)."""
    template = compile_template(webhook.template) if webhook.template else None
    token = webhook.secret.reveal() if webhook.secret and webhook.format in TOKEN_FORMATS else None
    return FormatOptions(
        format=webhook.format,
        event_type=webhook.event_type,
        ref=webhook.ref,
        token=token,
        template=template,
        content_type=webhook.content_type,
        context=context,
    )


class Sender:
    """Renders, signs and POSTs one delivery: the HTTP path shared by the daemon and the
    test-webhook command. Keeps one connection pool per webhook."""

    def __init__(self, context: PayloadContext = NO_CONTEXT) -> None:
        self._context = context
        self._sessions: dict[str, requests.Session] = {}
        self._format_options: dict[str, FormatOptions] = {}

    def _options(self, webhook: WebhookConfig) -> FormatOptions:
        options = self._format_options.get(webhook.name)
        if options is None:
            options = format_options(webhook, self._context)
            self._format_options[webhook.name] = options
        return options

    def prepare(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Prepared:
        """The exact body and headers of one attempt (signed over those very bytes)."""
        rendered = render(event, webhook.name, self._options(webhook))
        secret = webhook.secret.reveal() if webhook.secret else None
        headers = {
            "Content-Type": rendered.content_type,
            "User-Agent": USER_AGENT,
            **_basic_auth(webhook),
            **{name: value.reveal() for name, value in webhook.headers},
            **sign(
                webhook.signature,
                secret,
                delivery_id,
                rendered.body,
                previous_secrets=[s.reveal() for s in webhook.previous_secrets],
            ),
        }
        return Prepared(body=rendered.body, headers=headers)

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        """Render, sign and POST one delivery. Never raises for network or HTTP trouble.

        The request is prepared as ``Session.post`` would, then sent, so the Result can carry
        the very headers that went out (redacted), those requests adds included."""
        try:
            prepared = self.prepare(webhook, event, delivery_id)
        except (TemplateError, ValueError) as exc:
            return Result(None, f"cannot render the body: {exc}", 0.0, permanent=True)
        session = self._session(webhook)
        try:
            sent = session.prepare_request(
                requests.Request("POST", webhook.url, data=prepared.body, headers=prepared.headers)
            )
        except requests.RequestException as exc:
            return Result(None, f"request failed: {type(exc).__name__}", 0.0)
        request = redact_request(
            webhook, sent.url or webhook.url, list(sent.headers.items()), prepared.body
        )
        return replace(self._send(session, webhook, sent), request=request)

    def _send(
        self, session: requests.Session, webhook: WebhookConfig, sent: requests.PreparedRequest
    ) -> Result:
        """Send a prepared request and read what came back; never raises for network or HTTP
        trouble."""
        started = time.monotonic()
        try:
            settings = session.merge_environment_settings(
                sent.url, {}, True, webhook.ca_bundle or True, None
            )
            response = session.send(
                sent,
                timeout=(webhook.connect_timeout, webhook.timeout),
                allow_redirects=False,
                **settings,
            )
        except requests.ConnectTimeout:
            return Result(
                None, f"connect timed out after {webhook.connect_timeout:g}s", _ms(started)
            )
        except requests.Timeout:
            return Result(None, f"timed out after {webhook.timeout:g}s", _ms(started))
        except requests.ConnectionError as exc:
            refused = refused_address(exc)
            if refused is not None:
                return Result(None, refused, _ms(started), permanent=True)
            return Result(None, f"connection failed: {_reason(exc)}", _ms(started))
        except requests.RequestException as exc:
            return Result(None, f"request failed: {type(exc).__name__}", _ms(started))
        try:
            snippet = _read_capped(response)
        finally:
            response.close()
        latency = _ms(started)
        code = response.status_code
        if 200 <= code < 300:
            return Result(code, None, latency, body=snippet)
        if 300 <= code < 400:
            location = response.headers.get("Location", "")
            error = f"HTTP {code}: redirect to {location!r} not followed"
        else:
            error = f"HTTP {code}: {snippet}" if snippet else f"HTTP {code}"
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return Result(code, error, latency, retry_after, body=snippet)

    def _session(self, webhook: WebhookConfig) -> requests.Session:
        session = self._sessions.get(webhook.name)
        if session is None:
            session = requests.Session()
            if webhook.deny_private_addresses:
                guard = GuardedAdapter()
                session.mount("http://", guard)
                session.mount("https://", guard)
            self._sessions[webhook.name] = session
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


REDACTED = "<redacted>"
_ALWAYS_REDACTED = frozenset({"authorization", "proxy-authorization"})
"""Headers shown redacted whatever they hold (basic auth is a password in base64)."""


def redact_request(
    webhook: WebhookConfig, url: str, headers: Sequence[tuple[str, str]], body: bytes
) -> str:
    """The request as sent, as JSON for the delivery log, with every secret of the webhook
    shown as ``<redacted>``: in the URL (its password and query values, or all but its host
    when it came from the environment), in the headers (``Authorization`` and the configured
    ones always) and in the body (a gitlab or jenkins token), raw or encoded as a form, a URL
    or a JSON string would encode it. Signatures are shown: an HMAC does not reveal its key.
    """
    secrets = _secret_forms(webhook)
    configured = {name.lower() for name, _ in webhook.headers}
    shown = [
        [
            name,
            REDACTED
            if name.lower() in _ALWAYS_REDACTED or name.lower() in configured
            else _scrub(value, secrets),
        ]
        for name, value in headers
    ]
    return json.dumps(
        {
            "method": "POST",
            "url": _scrub(_redact_url(url, webhook.url_is_secret), secrets),
            "headers": shown,
            "body": _scrub(body.decode("utf-8", "replace"), secrets),
        }
    )


def _secret_forms(webhook: WebhookConfig) -> list[str]:
    """Every secret value of the webhook, in each form it may take in a request, longest
    first (so a secret inside another one leaves none of the longer one behind)."""
    values = [
        s.reveal()
        for s in (webhook.secret, webhook.password, *webhook.previous_secrets)
        if s is not None
    ]
    values.extend(value.reveal() for _, value in webhook.headers)
    parts = urlsplit(webhook.url)
    if parts.password:
        values.extend((parts.password, unquote(parts.password)))
    if webhook.url_is_secret:
        values.append(webhook.url)
        values.append(urlunsplit(("", "", parts.path, parts.query, "")))
    forms = {
        form
        for value in values
        if value
        for form in (
            value,
            quote_plus(value),
            quote(value, safe=""),
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
        )
    }
    return sorted(forms, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _redact_url(url: str, url_is_secret: bool) -> str:
    """The URL with its password and query values hidden, or only its scheme and host when
    it came from the environment (a Slack URL is its own token)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if url_is_secret:
        return f"{parts.scheme}://{host}/{REDACTED}"
    if parts.username is not None:
        password = "" if parts.password is None else f":{REDACTED}"
        host = f"{parts.username}{password}@{host}"
    query = "&".join(f"{p.partition('=')[0]}={REDACTED}" for p in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=host, query=query if parts.query else ""))


def _basic_auth(webhook: WebhookConfig) -> dict[str, str]:
    if not (webhook.username and webhook.password):
        return {}
    pair = f"{webhook.username}:{webhook.password.reveal()}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _read_capped(response: requests.Response) -> str:
    """The start of a response body, whitespace collapsed: read with a cap, so a huge or
    endless answer cannot stall a worker or bloat the delivery log."""
    try:
        chunk = next(response.iter_content(_SNIPPET_BYTES), b"")
    except requests.RequestException:
        return ""
    text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
    return " ".join(text.split())[:RESPONSE_SNIPPET]


def _reason(exc: requests.ConnectionError) -> str:
    """A short cause for a connection failure: the exception text carries the URL (which may
    hold a token) and pool internals, too long and too revealing for a log line."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "Remote end closed",
        "No route to host",
        "certificate verify failed",
    ):
        if marker in text:
            return marker
    return type(exc).__name__
