"""Delivery: the only module that sends HTTP. Takes due outbox rows, signs, POSTs, reschedules.

At least once, never silently dropped: a row leaves ``pending`` only as ``delivered`` (a 2xx)
or ``dead`` (a non-retryable answer, or retries exhausted), and stays listed when dead.
"""

from __future__ import annotations

import base64
import ipaddress
import queue
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from watcher.config import TOKEN_FORMATS, Config, RetryPolicy, WebhookConfig
from watcher.model import Event
from watcher.payloads import FormatOptions, TemplateError, compile_template, render
from watcher.signing import sign
from watcher.store import DEAD, DELIVERED, PENDING, Attempt, DueDelivery, Store

RESPONSE_SNIPPET = 512
"""Bytes of a response body kept in the delivery log (bodies are read with this cap)."""
RETRYABLE_4XX = frozenset({408, 425, 429})
USER_AGENT = "mlflow-registry-watcher"
_TICK = 0.25
"""Seconds the dispatcher waits for a result before looking for newly due rows."""
_IDLE = 1.0
"""Seconds an idle daemon drain waits before looking for retries that have come due."""


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

    def add(self, delivery_id: str, status: str) -> None:
        if status == DELIVERED:
            self.delivered += 1
            return
        self.failed_ids.append(delivery_id)
        if status == DEAD:
            self.dead += 1
        else:
            self.retrying += 1


def is_dead_at_once(result: Result, dead_on: frozenset[int] | None) -> bool:
    """A failure that no retry can mend: the default rule, or the webhook's dead_on list."""
    if result.permanent:
        return True
    if dead_on is not None and result.status_code is not None and 400 <= result.status_code < 500:
        return result.status_code in dead_on
    return not result.retryable


def backoff_delay(
    policy: RetryPolicy,
    attempts: int,
    retry_after: float | None,
    rng: random.Random,
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
        """Render, sign and POST one delivery. Never raises for network or HTTP trouble."""
        try:
            prepared = self.prepare(webhook, event, delivery_id)
        except (TemplateError, ValueError) as exc:
            return Result(None, f"cannot render the body: {exc}", 0.0, permanent=True)
        session = self._session(webhook)
        started = time.monotonic()
        try:
            response = session.post(
                webhook.url,
                data=prepared.body,
                headers=prepared.headers,
                timeout=(webhook.connect_timeout, webhook.timeout),
                allow_redirects=False,
                stream=True,
                verify=webhook.ca_bundle or True,
            )
        except requests.ConnectTimeout:
            return Result(
                None, f"connect timed out after {webhook.connect_timeout:g}s", _ms(started)
            )
        except requests.Timeout:
            return Result(None, f"timed out after {webhook.timeout:g}s", _ms(started))
        except requests.ConnectionError as exc:
            refused = _refused_address(exc)
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
                guard = _GuardedAdapter()
                session.mount("http://", guard)
                session.mount("https://", guard)
            self._sessions[webhook.name] = session
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


class Deliverer:
    """Drains the outbox.

    Every (webhook, model) lane has at most one delivery in flight, so a model's events reach a
    webhook in detection order; each webhook has up to ``delivery.workers`` lanes in flight, on
    threads of its own, so a slow or dead endpoint never holds up another one.
    """

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
        self,
        *,
        ignore_schedule: bool = False,
        stop: threading.Event | None = None,
        wake: threading.Event | None = None,
        forever: bool = False,
    ) -> DrainReport:
        """Deliver due rows until nothing is due or in flight (``forever``: until ``stop``).

        ``ignore_schedule`` tries every pending row once now, whatever its backoff says: for
        ``run --once``, where the time between cron runs is the backoff. Once ``stop`` is set no
        new request starts; those in flight get ``delivery.shutdown_grace`` to finish and the
        rest stays queued. ``wake`` cuts the wait short when a poll has queued something.
        """
        report = DrainReport()
        if not self._drain_lock.acquire(blocking=False):
            return report  # another drain is running; it will pick up these rows
        try:
            self._drain(report, ignore_schedule, stop, wake, forever)
        finally:
            self._drain_lock.release()
        return report

    def _drain(
        self,
        report: DrainReport,
        ignore_schedule: bool,
        stop: threading.Event | None,
        wake: threading.Event | None,
        forever: bool,
    ) -> None:
        results: queue.Queue[tuple[DueDelivery, str]] = queue.Queue()
        busy: set[tuple[str, str]] = set()
        per_webhook: Counter[str] = Counter()
        attempted: set[str] = set()
        grace_ends: float | None = None
        while True:
            stopping = stop is not None and stop.is_set()
            if not stopping:
                self._dispatch(ignore_schedule, attempted, busy, per_webhook, results)
            if not busy:
                if stopping or not forever:
                    return
                self._idle(stop, wake)
                continue
            if stopping:
                if grace_ends is None:
                    grace_ends = time.monotonic() + self._config.delivery.shutdown_grace
                if time.monotonic() >= grace_ends:
                    self._log.warning(
                        "delivery.abandoned",
                        in_flight=len(busy),
                        note="still in flight after shutdown_grace; they stay queued and are "
                        "sent again, with the same delivery ids, on the next start",
                    )
                    return
            try:
                item = results.get(timeout=_TICK)
            except queue.Empty:
                continue
            while True:
                due, status = item
                busy.discard((due.webhook, due.event.model_name))
                per_webhook[due.webhook] -= 1
                report.add(due.delivery_id, status)
                try:
                    item = results.get_nowait()
                except queue.Empty:
                    break

    def _idle(self, stop: threading.Event | None, wake: threading.Event | None) -> None:
        """Between drains: wake up for a poll's new rows, a stop, or retries coming due."""
        if wake is not None:
            wake.wait(_IDLE)
            wake.clear()
        elif stop is not None:
            stop.wait(_IDLE)
        else:
            time.sleep(_IDLE)

    def _dispatch(
        self,
        ignore_schedule: bool,
        attempted: set[str],
        busy: set[tuple[str, str]],
        per_webhook: Counter[str],
        results: queue.Queue[tuple[DueDelivery, str]],
    ) -> None:
        heads = self._store.due_heads(
            self._clock(), ignore_schedule=ignore_schedule, exclude=attempted
        )
        chosen: list[str] = []
        for head in heads:
            lane = (head.webhook, head.model_name)
            if lane in busy or not self._known(head.webhook):
                continue
            if per_webhook[head.webhook] >= self._config.delivery.workers:
                continue
            busy.add(lane)
            per_webhook[head.webhook] += 1
            chosen.append(head.delivery_id)
        # Only what is sent now is decoded: a backlog on many lanes stays cheap to dispatch.
        for due in self._store.load_due(chosen):
            if ignore_schedule:
                attempted.add(due.delivery_id)
            threading.Thread(
                target=self._attempt,
                args=(due, results),
                name=f"deliver-{due.webhook}",
                daemon=True,
            ).start()

    def _attempt(self, due: DueDelivery, results: queue.Queue[tuple[DueDelivery, str]]) -> None:
        status = PENDING
        try:
            status = self.deliver_one(due)
        except Exception as exc:  # a broken disk must not lose the lane forever
            self._log.error(
                "delivery.crashed",
                delivery_id=due.delivery_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            results.put((due, status))

    def close(self) -> None:
        self.sender.close()

    def _known(self, webhook: str) -> bool:
        if self._config.webhook(webhook) is not None:
            return True
        if webhook not in self._warned_orphans:
            self._warned_orphans.add(webhook)
            self._log.warning(
                "delivery.orphaned",
                webhook=webhook,
                reason="webhook no longer configured; its pending deliveries stay queued",
            )
        return False

    def deliver_one(self, due: DueDelivery) -> str:
        """One attempt for one row; records it and returns the row's new status."""
        webhook = self._config.webhook(due.webhook)
        assert webhook is not None
        now = self._clock()
        result = self.sender.post(webhook, due.event, due.delivery_id)
        policy = webhook.retry
        attempts = due.attempts + 1
        next_at: float | None = None
        if result.ok:
            status = DELIVERED
        elif (
            is_dead_at_once(result, policy.dead_on)
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
                response=result.body or None,
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


def _basic_auth(webhook: WebhookConfig) -> dict[str, str]:
    if not (webhook.username and webhook.password):
        return {}
    pair = f"{webhook.username}:{webhook.password.reveal()}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


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


# --------------------------------------------------------------------------- address guard


class PrivateAddressError(OSError):
    """The connection reached an address that delivery.deny_private_addresses refuses."""


def _check_peer(sock: socket.socket | None) -> None:
    if sock is None:
        return
    peer = ipaddress.ip_address(sock.getpeername()[0])
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if (
        peer.is_private
        or peer.is_loopback
        or peer.is_link_local
        or peer.is_reserved
        or peer.is_multicast
        or peer.is_unspecified
    ):
        sock.close()
        raise PrivateAddressError(f"refused to deliver to private address {peer}")


def _guarded_pools() -> dict[str, type[Any]]:
    """urllib3 pools whose connections check the address they actually connected to.

    Checking the socket, not the name, means DNS cannot smuggle in a private address (no
    TOCTOU between a lookup and the connect).
    """
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            _check_peer(self.sock)

    class GuardedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            _check_peer(self.sock)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools()


def _refused_address(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PrivateAddressError):
            return str(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                found = _refused_address(arg)
                if found:
                    return found
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            found = _refused_address(reason)
            if found:
                return found
        current = current.__cause__ or current.__context__
    return None
