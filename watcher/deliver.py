"""Delivery: the only module that sends HTTP. Takes due outbox rows, signs, POSTs, reschedules.

At least once, never silently dropped: a row leaves ``pending`` only as ``delivered`` (a 2xx)
or ``dead`` (a non-retryable answer, or retries exhausted), and stays listed when dead.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from watcher.config import TOKEN_FORMATS, Config, DeliveryConfig, WebhookConfig
from watcher.model import Event
from watcher.payloads import FormatOptions, TemplateError, compile_template, render
from watcher.signing import sign
from watcher.store import DEAD, DELIVERED, PENDING, Attempt, DueDelivery, Store

RESPONSE_SNIPPET = 512
"""Bytes of a response body kept in the delivery log (bodies are read with this cap)."""
RETRYABLE_4XX = frozenset({408, 425, 429})
USER_AGENT = "mlflow-registry-watcher"


@dataclass(frozen=True)
class Result:
    """What one POST came to."""

    status_code: int | None
    error: str | None
    latency_ms: float
    retry_after: float | None = None
    body: str = ""
    """The start of the response body (capped), for the log and for test-webhook."""
    permanent: bool = False
    """Failed before sending (the body could not be rendered): retrying cannot help."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.permanent:
            return False
        code = self.status_code
        return code is None or code < 400 or code >= 500 or code in RETRYABLE_4XX


@dataclass(frozen=True)
class Prepared:
    body: bytes
    headers: dict[str, str]


def format_options(webhook: WebhookConfig) -> FormatOptions:
    """How a webhook's bodies are rendered; its template compiled once (validated at load)."""
    template = compile_template(webhook.template) if webhook.template else None
    token = webhook.secret.reveal() if webhook.secret and webhook.format in TOKEN_FORMATS else None
    return FormatOptions(
        format=webhook.format,
        event_type=webhook.event_type,
        ref=webhook.ref,
        token=token,
        template=template,
        content_type=webhook.content_type,
    )


@dataclass
class DrainReport:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    failed_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.retrying + self.dead


def backoff_delay(
    policy: DeliveryConfig, attempts: int, retry_after: float | None, rng: random.Random
) -> float:
    """Exponential backoff with full jitter; a Retry-After answer is honoured up to max_delay."""
    ceiling = min(policy.max_delay, policy.initial_delay * (2 ** min(attempts, 32)))
    delay = (
        rng.uniform(policy.initial_delay / 2, ceiling) if attempts == 0 else rng.uniform(0, ceiling)
    )
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Sender:
    """Renders, signs and POSTs one delivery: the HTTP path shared by the daemon and the
    test-webhook command. Keeps one connection pool per webhook."""

    def __init__(self) -> None:
        self._sessions: dict[str, requests.Session] = {}
        self._format_options: dict[str, FormatOptions] = {}

    def _options(self, webhook: WebhookConfig) -> FormatOptions:
        options = self._format_options.get(webhook.name)
        if options is None:
            options = format_options(webhook)
            self._format_options[webhook.name] = options
        return options

    def prepare(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Prepared:
        """The exact body and headers of one attempt (signed over those very bytes)."""
        rendered = render(event, webhook.name, self._options(webhook))
        secret = webhook.secret.reveal() if webhook.secret else None
        headers = {
            "Content-Type": rendered.content_type,
            "User-Agent": USER_AGENT,
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
        """Render, sign and POST one delivery. Never raises for network or HTTP trouble."""
        try:
            prepared = self.prepare(webhook, event, delivery_id)
        except (TemplateError, ValueError) as exc:
            return Result(None, f"cannot render the body: {exc}", 0.0, permanent=True)
        auth = (
            (webhook.username, webhook.password.reveal())
            if webhook.username and webhook.password
            else None
        )
        session = self._session(webhook.name)
        started = time.monotonic()
        try:
            response = session.post(
                webhook.url,
                data=prepared.body,
                headers=prepared.headers,
                auth=auth,
                timeout=webhook.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            return Result(None, f"timed out after {webhook.timeout:g}s", _ms(started))
        except requests.ConnectionError as exc:
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

    def _session(self, name: str) -> requests.Session:
        session = self._sessions.get(name)
        if session is None:
            session = requests.Session()
            self._sessions[name] = session
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


class Deliverer:
    """Drains the outbox. One drain at a time per process; webhooks are served in parallel."""

    def __init__(
        self,
        store: Store,
        config: Config,
        log: Any,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._drain_lock = threading.Lock()
        self._warned_orphans: set[str] = set()
        self.sender = Sender()

    def drain(
        self, *, ignore_schedule: bool = False, stop: threading.Event | None = None
    ) -> DrainReport:
        """Deliver every due row, lane by lane, until nothing is due (or ``stop`` is set).

        ``ignore_schedule`` tries every pending row once now, whatever its backoff says: for
        ``run --once``, where the time between cron runs is the backoff.
        """
        report = DrainReport()
        if not self._drain_lock.acquire(blocking=False):
            return report  # another drain is running; it will pick up these rows
        try:
            attempted: set[str] = set()
            while stop is None or not stop.is_set():
                due = self._store.due_deliveries(
                    self._clock(), ignore_schedule=ignore_schedule, exclude=attempted
                )
                due = [d for d in due if self._known(d)]
                if not due:
                    break
                attempted.update(d.delivery_id for d in due)
                self._deliver_round(due, report)
        finally:
            self._drain_lock.release()
        return report

    def close(self) -> None:
        self.sender.close()

    def _known(self, due: DueDelivery) -> bool:
        if self._config.webhook(due.webhook) is not None:
            return True
        if due.webhook not in self._warned_orphans:
            self._warned_orphans.add(due.webhook)
            self._log.warning(
                "delivery.orphaned",
                webhook=due.webhook,
                reason="webhook no longer configured; its pending deliveries stay queued",
            )
        return False

    def _deliver_round(self, due: Iterable[DueDelivery], report: DrainReport) -> None:
        by_webhook: dict[str, list[DueDelivery]] = defaultdict(list)
        for item in due:
            by_webhook[item.webhook].append(item)
        lock = threading.Lock()

        def serve(items: list[DueDelivery]) -> None:
            for item in items:
                status = self.deliver_one(item)
                with lock:
                    if status == DELIVERED:
                        report.delivered += 1
                    else:
                        report.failed_ids.append(item.delivery_id)
                        if status == DEAD:
                            report.dead += 1
                        else:
                            report.retrying += 1

        if len(by_webhook) == 1:
            serve(next(iter(by_webhook.values())))
            return
        with ThreadPoolExecutor(max_workers=min(8, len(by_webhook))) as pool:
            for future in [pool.submit(serve, items) for items in by_webhook.values()]:
                future.result()

    def deliver_one(self, due: DueDelivery) -> str:
        """One attempt for one row; records it and returns the row's new status."""
        webhook = self._config.webhook(due.webhook)
        assert webhook is not None
        now = self._clock()
        result = self.sender.post(webhook, due.event, due.delivery_id)
        policy = self._config.delivery
        attempts = due.attempts + 1
        next_at: float | None = None
        if result.ok:
            status = DELIVERED
        elif (
            not result.retryable
            or attempts >= policy.max_attempts
            or now - due.created_at >= policy.max_age
        ):
            status = DEAD
        else:
            status = PENDING
            next_at = now + backoff_delay(policy, due.attempts, result.retry_after, self._rng)
        self._store.record_attempt(
            Attempt(
                delivery_id=due.delivery_id,
                attempted_at=now,
                status_code=result.status_code,
                error=result.error,
                latency_ms=result.latency_ms,
            ),
            status=status,
            next_attempt_at=next_at,
        )
        fields: dict[str, Any] = {
            "webhook": webhook.name,
            "event_type": due.event.type.value,
            "event_id": due.event.event_id,
            "delivery_id": due.delivery_id,
            "model": due.event.model_name,
            "version": due.event.model_version,
            "attempt": attempts,
            "status": result.status_code,
            "latency_ms": round(result.latency_ms, 1),
        }
        if status == DELIVERED:
            self._log.info("delivery.succeeded", **fields)
        elif status == DEAD:
            self._log.error("delivery.dead", **fields, error=result.error)
        else:
            assert next_at is not None
            self._log.warning(
                "delivery.failed", **fields, error=result.error, retry_in_s=round(next_at - now, 1)
            )
        return status


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _read_capped(response: requests.Response) -> str:
    try:
        chunk = next(response.iter_content(RESPONSE_SNIPPET), b"")
    except requests.RequestException:
        return ""
    text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
    return " ".join(text.split())[:200]


def _reason(exc: requests.ConnectionError) -> str:
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
