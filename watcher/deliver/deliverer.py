"""Draining the outbox: which due rows to send now, on which threads, and what each answer
does to its row.

At least once, never silently dropped: a row leaves ``pending`` only as ``delivered`` (a 2xx)
or ``dead`` (a non-retryable answer, or retries exhausted), and stays listed when dead.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from watcher.config import Config, RetryPolicy, WebhookConfig
from watcher.deliver.http import Sender
from watcher.deliver.policy import Result, backoff_delay, is_dead_at_once
from watcher.model import Event
from watcher.store import (
    DEAD,
    DELIVERED,
    PENDING,
    Attempt,
    DueDelivery,
    Head,
    LeaseLost,
    StateUnavailable,
    Store,
)

_TICK = 0.25
"""Seconds the dispatcher waits for a result before looking for newly due rows."""
_IDLE = 1.0
"""Seconds an idle daemon drain waits before looking for retries that have come due."""
_LOAD_AHEAD = 32
"""How many heads beyond those dispatched now are read with their events in the same query."""
_HEADS_FRESH = 1.0
"""Seconds the lane heads read for one dispatch serve the next ones while sends are in flight:
reading them scans every pending row (tens of ms for a backlog on 1,000 lanes, more on
PostgreSQL), and a busy drain dispatches after every burst of answers."""


class Outcome(StrEnum):
    """What one attempt came to, as counted by /metrics (``result`` label)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    """Failed, queued to try again."""
    DEAD = "dead"


_OUTCOMES = {DELIVERED: Outcome.DELIVERED, PENDING: Outcome.RETRYING, DEAD: Outcome.DEAD}
SKIPPED = "skipped"
"""Not sent after all: no longer pending, or this replica may no longer send (not counted)."""


class DeliverySender(Protocol):
    """What the deliverer needs of a sender; ``Sender`` in production, a fake in tests."""

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        """Send one delivery; report network and HTTP trouble in the Result, never raise."""

    def close(self) -> None:
        """Release connections."""


class DeliveryObserver(Protocol):
    """Told each attempt's outcome as it is recorded (``Metrics`` counts them), so counting
    depends on the outcome itself rather than on the wording of a log line."""

    def observe_delivery(self, webhook: str, outcome: Outcome) -> None: ...


@dataclass
class DrainReport:
    """What one drain did, for ``run --once`` to report and choose its exit status."""

    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    failed_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.retrying + self.dead

    def add(self, delivery_id: str, status: str) -> None:
        if status == SKIPPED:
            return
        if status == DELIVERED:
            self.delivered += 1
            return
        self.failed_ids.append(delivery_id)
        if status == DEAD:
            self.dead += 1
        else:
            self.retrying += 1


@dataclass
class _Heads:
    """The due lane heads last read by a drain, minus those dispatched since."""

    rows: list[Head] = field(default_factory=list)
    read_at: float = float("-inf")
    loaded: dict[str, DueDelivery] = field(default_factory=dict)
    """Rows of heads read ahead with their events (cleared whenever the heads are read)."""


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
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sender: DeliverySender | None = None,
        observer: DeliveryObserver | None = None,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        """``clock`` stamps attempts and decides what is due; ``monotonic`` times the shutdown
        grace; ``observer`` (Metrics, in the daemon and ``--once``) hears every outcome;
        ``may_send`` (a replica's leadership) is asked before every request, and while it says
        no, nothing is sent. All injectable so tests drive time and answers without a network
        or a wait."""
        self._store = store
        self._config = config
        self._log = log
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._observer = observer
        self._may_send = may_send or (lambda: True)
        self._drain_lock = threading.Lock()
        self._warned_orphans: set[str] = set()
        self.sender: DeliverySender = (
            sender if sender is not None else Sender(config.mlflow.payload_context)
        )

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
        """The dispatch loop: start what may start, collect answers, stop on ``stop`` within
        the grace. Answers are collected in batches so a burst of replies costs one dispatch."""
        results: queue.Queue[tuple[DueDelivery, str]] = queue.Queue()
        busy: set[tuple[str, str]] = set()
        per_webhook: Counter[str] = Counter()
        attempted: set[str] = set()
        grace_ends: float | None = None
        heads = _Heads()
        while True:
            # A replica that may no longer send (its lease cannot be trusted) stops as on a
            # signal: what is in flight finishes, nothing new starts.
            stopping = (stop is not None and stop.is_set()) or not self._may_send()
            if not stopping:
                self._dispatch(ignore_schedule, attempted, busy, per_webhook, results, heads)
            if not busy:
                if stopping or not forever:
                    return
                self._idle(stop, wake)
                continue
            if stopping:
                if grace_ends is None:
                    grace_ends = self._monotonic() + self._config.delivery.shutdown_grace
                if self._monotonic() >= grace_ends:
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
        heads: _Heads,
    ) -> None:
        """Start one thread per lane head that may go now: its lane idle, its webhook
        configured and under its ``workers`` cap. Under ``ignore_schedule`` each row is tried
        once per drain (``attempted``), or a failing row would be retried at once forever.
        The heads are read again when nothing is in flight, when those read last are used up,
        or after ``_HEADS_FRESH``; a head stays its lane's head until it is sent (rows are
        only added behind it), so dispatching from an older read keeps each lane's order."""
        stale = self._monotonic() >= heads.read_at + _HEADS_FRESH
        if not busy or not heads.rows or stale:
            # A lane in flight has its sent row as head: it is dropped here, and its next row
            # is read again once that answer is in (a failed row stays first in its lane).
            heads.rows = [
                head
                for head in self._store.due_heads(
                    self._clock(), ignore_schedule=ignore_schedule, exclude=attempted
                )
                if (head.webhook, head.model_name) not in busy
            ]
            heads.read_at = self._monotonic()
            # Rows read ahead stay while they are still heads, for as long as the heads do.
            current = {h.delivery_id for h in heads.rows}
            heads.loaded = (
                {} if stale else {i: due for i, due in heads.loaded.items() if i in current}
            )
        chosen = self._choose(heads, busy, per_webhook)
        for due in self._load(heads, chosen):
            if ignore_schedule:
                attempted.add(due.delivery_id)
            threading.Thread(
                target=self._attempt,
                args=(due, results),
                name=f"deliver-{due.webhook}",
                daemon=True,
            ).start()

    def _choose(
        self, heads: _Heads, busy: set[tuple[str, str]], per_webhook: Counter[str]
    ) -> list[str]:
        """The heads that may go now (their lane idle, their webhook configured and under its
        ``workers`` cap), taken out of ``heads``; the scan stops once every webhook is full."""
        cap = self._config.delivery.workers
        room = {w.name: cap - per_webhook[w.name] for w in self._config.webhooks}
        free = sum(max(0, n) for n in room.values())
        chosen: list[str] = []
        kept: list[Head] = []
        for index, head in enumerate(heads.rows):
            if free <= 0:
                kept.extend(heads.rows[index:])
                break
            lane = (head.webhook, head.model_name)
            if lane in busy or not self._known(head.webhook) or room[head.webhook] <= 0:
                kept.append(head)
                continue
            busy.add(lane)
            per_webhook[head.webhook] += 1
            room[head.webhook] -= 1
            free -= 1
            chosen.append(head.delivery_id)
        heads.rows = kept
        return chosen

    def _load(self, heads: _Heads, chosen: list[str]) -> list[DueDelivery]:
        """The chosen rows with their events. Only what is sent soon is decoded (a backlog on
        many lanes stays cheap to dispatch), but a few heads ahead are read with them, so a
        busy drain asks the state once per ``_LOAD_AHEAD`` rows rather than once per answer."""
        missing = [i for i in chosen if i not in heads.loaded]
        if missing:
            ahead = [
                h.delivery_id for h in heads.rows[:_LOAD_AHEAD] if h.delivery_id not in heads.loaded
            ]
            for due in self._store.load_due([*missing, *ahead]):
                heads.loaded[due.delivery_id] = due
        return [heads.loaded.pop(i) for i in chosen if i in heads.loaded]

    def _attempt(self, due: DueDelivery, results: queue.Queue[tuple[DueDelivery, str]]) -> None:
        """A worker thread: one attempt, then its lane is handed back whatever happened."""
        status = PENDING
        try:
            status = self.deliver_one(due)
        except LeaseLost as exc:
            status = SKIPPED
            self._log.warning(
                "delivery.unrecorded",
                delivery_id=due.delivery_id,
                reason=f"{exc}; the leader that holds it now sends it again, same delivery id",
            )
        except StateUnavailable as exc:
            # The database went away around the claim or the record: the row is still pending
            # (nothing was written), and is tried again once the state answers.
            status = SKIPPED
            self._log.warning("delivery.unrecorded", delivery_id=due.delivery_id, reason=str(exc))
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
        """Whether the webhook is still configured; warns once per webhook when not, as its
        rows wait (not die) for it to come back."""
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
        if not self._store.claim(due.delivery_id) or not self._may_send():
            return SKIPPED
        now = self._clock()
        result = self.sender.post(webhook, due.event, due.delivery_id)
        status, next_at = self._settle(webhook.retry, due, result, now)
        self._store.record_attempt(
            Attempt(
                delivery_id=due.delivery_id,
                attempted_at=now,
                status_code=result.status_code,
                error=result.error,
                latency_ms=result.latency_ms,
                response=result.body or None,
                request=result.request,
            ),
            status=status,
            next_attempt_at=next_at,
        )
        self._report(webhook.name, due, result, status, None if next_at is None else next_at - now)
        return status

    def _settle(
        self, policy: RetryPolicy, due: DueDelivery, result: Result, now: float
    ) -> tuple[str, float | None]:
        """The row's new status and, when pending, when to try again: dead once no retry can
        help, the attempts are used up or the row is older than ``max_age``."""
        if result.ok:
            return DELIVERED, None
        if (
            is_dead_at_once(result, policy.dead_on)
            or due.attempts + 1 >= policy.max_attempts
            or now - due.created_at >= policy.max_age
        ):
            return DEAD, None
        return PENDING, now + backoff_delay(policy, due.attempts, result.retry_after, self._rng)

    def _report(
        self,
        webhook: str,
        due: DueDelivery,
        result: Result,
        status: str,
        retry_in: float | None,
    ) -> None:
        """Log the outcome and tell the observer; counting must never break delivery."""
        fields: dict[str, Any] = {
            "webhook": webhook,
            "event_type": due.event.type.value,
            "event_id": due.event.event_id,
            "delivery_id": due.delivery_id,
            "model": due.event.model_name,
            "version": due.event.model_version,
            "attempt": due.attempts + 1,
            "status": result.status_code,
            "latency_ms": round(result.latency_ms, 1),
        }
        if status == DELIVERED:
            self._log.info("delivery.succeeded", **fields)
        elif status == DEAD:
            self._log.error("delivery.dead", **fields, error=result.error)
        else:
            assert retry_in is not None
            self._log.warning(
                "delivery.failed", **fields, error=result.error, retry_in_s=round(retry_in, 1)
            )
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.observe_delivery(webhook, _OUTCOMES[status])
