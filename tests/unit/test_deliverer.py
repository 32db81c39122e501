"""The Deliverer's drain loop with a fake sender, a real store and injected clocks.

Lane order, the per-webhook worker cap, the shutdown grace, orphaned webhooks and the outcomes
reported to metrics, without a network and without asserting on how long anything took: where
a test must wait for a worker thread, it waits on that thread's own signal.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BACKENDS, open_store
from tests.helpers import RecordingLog
from tests.store_helpers import NOW, attempts, deliveries, deliveries_for, event, queue
from watcher.config import Config, DeliveryConfig, RetryPolicy, WebhookConfig
from watcher.deliver import Deliverer, DeliverySender, Outcome, Result
from watcher.metrics import Metrics
from watcher.model import Event
from watcher.store import DEAD, DELIVERED, PENDING, DueDelivery, Head, Store

SAFETY = 10.0
"""Seconds before a wait on a worker thread gives up: a hang fails the test, not a timing."""


class Clock:
    """Wall-clock time that moves only when a test moves it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSender:
    """Answers with the status codes it is given per delivery (200 once they run out), counts
    the requests in flight per webhook, and can hold every request at a gate."""

    def __init__(self, codes: dict[str, list[int]] | None = None) -> None:
        self.codes = codes or {}
        self.calls: list[tuple[str, str]] = []
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.gate: threading.Event | None = None
        self.on_post: Callable[[], None] = lambda: None
        self.closed = False
        self._changed = threading.Condition()

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        with self._changed:
            self.calls.append((webhook.name, delivery_id))
            now = self.in_flight.get(webhook.name, 0) + 1
            self.in_flight[webhook.name] = now
            self.peak[webhook.name] = max(self.peak.get(webhook.name, 0), now)
            self._changed.notify_all()
        self.on_post()
        if self.gate is not None:
            assert self.gate.wait(SAFETY), "the test never opened the gate"
        codes = self.codes.get(delivery_id)
        code = codes.pop(0) if codes else 200
        with self._changed:
            self.in_flight[webhook.name] -= 1
        ok = 200 <= code < 300
        return Result(code, None if ok else f"HTTP {code}", 1.0, body="answer")

    def wait_in_flight(self, total: int) -> None:
        """Block until ``total`` requests are held at the gate at once."""
        with self._changed:
            assert self._changed.wait_for(lambda: sum(self.in_flight.values()) >= total, SAFETY), (
                f"never {total} requests in flight: {self.in_flight}"
            )

    def sent(self, webhook: str) -> list[str]:
        return [d for w, d in self.calls if w == webhook]

    def close(self) -> None:
        self.closed = True


class LowestDraw(random.Random):
    """Backoff at the bottom of its jitter range: a retry is due after initial_delay / 2."""

    def uniform(self, a: float, b: float) -> float:
        return a


def make_config(*webhooks: str, workers: int = 4, retry: RetryPolicy | None = None) -> Config:
    return Config(
        delivery=DeliveryConfig(workers=workers, shutdown_grace=10.0),
        webhooks=tuple(
            WebhookConfig(name=n, url="http://127.0.0.1/h", retry=retry or RetryPolicy())
            for n in webhooks
        ),
    )


class WatchedStore(Store):
    """A real store that signals each time the dispatcher looks for due lane heads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.looks = 0
        self._looked = threading.Condition()

    def due_heads(self, now: float, **kwargs: Any) -> list[Head]:
        heads = super().due_heads(now, **kwargs)
        with self._looked:
            self.looks += 1
            self._looked.notify_all()
        return heads

    def wait_looks(self, count: int) -> None:
        with self._looked:
            assert self._looked.wait_for(lambda: self.looks >= count, SAFETY)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[WatchedStore]:
    """The deliverer on a real store of each backend."""
    with open_store(request.param, request, WatchedStore) as opened:
        yield opened


def deliverer(
    store: Store, config: Config, sender: DeliverySender, log: RecordingLog, **kwargs: Any
) -> Deliverer:
    kwargs.setdefault("clock", Clock())
    return Deliverer(store, config, log, sender=sender, rng=LowestDraw(), **kwargs)


def queued(store: Store, models: list[tuple[str, str]], *webhooks: str) -> list[str]:
    """Queue one event per (model, version), in that order, for each webhook; their ids."""
    events = [event(model, version) for model, version in models]
    rows = deliveries_for(events, *webhooks)
    queue(store, events, rows)
    return [r.delivery_id for r in rows]


def status_of(store: Store) -> dict[str, str]:
    return {row.delivery_id: row.status for row in deliveries(store)}


def test_a_lane_keeps_detection_order_and_waits_behind_a_retry(store: Store) -> None:
    first, second, other = queued(store, [("fraud", "1"), ("fraud", "2"), ("churn", "1")], "a")
    sender = FakeSender({first: [500]})
    clock = Clock()
    subject = deliverer(store, make_config("a"), sender, RecordingLog(), clock=clock)

    report = subject.drain()

    assert (report.delivered, report.retrying, report.failed_ids) == (1, 1, [first])
    assert sorted(sender.sent("a")) == sorted([first, other]), "the second waits for the first"
    assert status_of(store) == {first: PENDING, second: PENDING, other: DELIVERED}

    clock.now += 0.5  # not yet: the retry is due after initial_delay / 2 = 1 s
    assert subject.drain().delivered == 0
    clock.now += 0.5
    report = subject.drain()

    assert report.delivered == 2
    assert [d for d in sender.sent("a") if d != other] == [first, first, second]
    assert set(status_of(store).values()) == {DELIVERED}


def test_each_webhook_has_at_most_workers_lanes_in_flight(store: Store) -> None:
    models = [(f"model-{n}", "1") for n in range(4)]
    busy = queued(store, models, "busy")
    (quiet,) = queued(store, [("other", "1")], "quiet")
    sender = FakeSender()
    sender.gate = threading.Event()
    subject = deliverer(store, make_config("busy", "quiet", workers=2), sender, RecordingLog())
    reports = []
    drain = threading.Thread(target=lambda: reports.append(subject.drain()))
    drain.start()
    try:
        # Two lanes of "busy" at the gate do not hold up "quiet".
        sender.wait_in_flight(3)
        assert sender.in_flight == {"busy": 2, "quiet": 1}
    finally:
        sender.gate.set()
        drain.join(SAFETY)
    assert not drain.is_alive()
    assert reports[0].delivered == 5
    assert sender.peak == {"busy": 2, "quiet": 1}
    assert sorted(sender.sent("busy")) == sorted(busy)
    assert sender.sent("quiet") == [quiet]


def test_a_lane_never_has_two_requests_in_flight(store: WatchedStore) -> None:
    first, second = queued(store, [("fraud", "1"), ("fraud", "2")], "a")
    sender = FakeSender()
    sender.gate = threading.Event()
    subject = deliverer(store, make_config("a"), sender, RecordingLog())
    drain = threading.Thread(target=subject.drain)
    drain.start()
    try:
        sender.wait_in_flight(1)
        store.wait_looks(store.looks + 1)  # the dispatcher looked again, the head still pending
        assert sender.calls == [("a", first)]
    finally:
        sender.gate.set()
        drain.join(SAFETY)
    assert sender.calls == [("a", first), ("a", second)]


class HeldSender(FakeSender):
    """Holds each request until the test releases its delivery id, and notes how many times
    the dispatcher had read the lane heads when the request started."""

    def __init__(self, store: WatchedStore) -> None:
        super().__init__()
        self.store = store
        self.looks_at: dict[str, int] = {}
        self.released: set[str] = set()
        self._held = threading.Condition()

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        with self._held:
            self.looks_at[delivery_id] = self.store.looks
            self._held.notify_all()
            assert self._held.wait_for(lambda: delivery_id in self.released, SAFETY)
        return super().post(webhook, event, delivery_id)

    def wait_started(self, *delivery_ids: str) -> None:
        with self._held:
            assert self._held.wait_for(lambda: set(delivery_ids) <= set(self.looks_at), SAFETY)

    def release(self, *delivery_ids: str) -> None:
        with self._held:
            self.released.update(delivery_ids)
            self._held.notify_all()


def test_a_busy_drain_sends_the_next_lanes_from_the_heads_it_has_read(
    store: WatchedStore,
) -> None:
    """While requests are in flight, the lane heads read for one dispatch serve the next
    ones (reading them after every answer was most of the cost of a backlog on many lanes);
    the clock that would make them stale does not move here."""
    first, second, third = queued(store, [("a", "1"), ("b", "1"), ("c", "1")], "w")
    sender = HeldSender(store)
    subject = deliverer(
        store, make_config("w", workers=2), sender, RecordingLog(), monotonic=Clock()
    )
    reports = []
    drain = threading.Thread(target=lambda: reports.append(subject.drain()))
    drain.start()
    try:
        sender.wait_started(first, second)
        sender.release(first)
        sender.wait_started(third)
        assert sender.looks_at == {first: 1, second: 1, third: 1}
    finally:
        sender.release(first, second, third)
        drain.join(SAFETY)
    assert not drain.is_alive()
    assert reports[0].delivered == 3


def test_heads_read_while_a_lane_is_in_flight_leave_that_lane_alone(store: WatchedStore) -> None:
    """A lane whose head is in flight still shows that row as its head (it stays pending
    until answered): read again then, the lane is left out, not sent twice, and its next row
    goes once the answer is in."""
    first, second = queued(store, [("a", "1"), ("a", "2")], "w")
    (other,) = queued(store, [("b", "1")], "w")
    sender = HeldSender(store)
    subject = deliverer(
        store, make_config("w", workers=2), sender, RecordingLog(), monotonic=Clock()
    )
    drain = threading.Thread(target=subject.drain)
    drain.start()
    try:
        sender.wait_started(first, other)
        sender.release(other)  # nothing is left of the heads read: they are read again
        store.wait_looks(2)
        sender.release(first)
        sender.wait_started(second)
    finally:
        sender.release(first, second, other)
        drain.join(SAFETY)
    assert not drain.is_alive()
    assert sender.calls == [("w", other), ("w", first), ("w", second)]


def test_a_stop_lets_requests_in_flight_finish_within_the_grace(store: Store) -> None:
    first, second = queued(store, [("fraud", "1"), ("fraud", "2")], "a")
    stop = threading.Event()
    sender = FakeSender()
    sender.on_post = stop.set  # the stop comes while the first request is in flight
    log = RecordingLog()
    subject = deliverer(store, make_config("a"), sender, log, monotonic=lambda: 0.0)

    report = subject.drain(stop=stop, forever=True)

    assert report.delivered == 1
    assert sender.calls == [("a", first)], "no new request starts once stopping"
    assert status_of(store) == {first: DELIVERED, second: PENDING}
    assert log.events("delivery.abandoned") == []


def test_a_request_that_outlives_the_grace_is_left_queued(store: Store) -> None:
    (delivery,) = queued(store, [("fraud", "1")], "a")
    stop = threading.Event()
    sender = FakeSender()
    sender.gate = threading.Event()
    sender.on_post = stop.set
    ticks = iter(range(0, 10_000, 100))  # each look at the monotonic clock is 100 s later
    log = RecordingLog()
    subject = deliverer(store, make_config("a"), sender, log, monotonic=lambda: float(next(ticks)))

    report = subject.drain(stop=stop, forever=True)

    assert (report.delivered, report.retrying, report.dead) == (0, 0, 0)
    (abandoned,) = log.events("delivery.abandoned")
    assert abandoned["in_flight"] == 1
    assert status_of(store) == {delivery: PENDING}
    assert attempts(store, delivery) == []
    sender.gate.set()  # let the worker finish before the store closes
    for worker in threading.enumerate():
        if worker.name == "deliver-a":
            worker.join(SAFETY)


def test_rows_of_a_webhook_no_longer_configured_stay_queued(store: Store) -> None:
    (kept,) = queued(store, [("fraud", "1")], "kept")
    gone = queued(store, [("fraud", "2"), ("churn", "1")], "gone")
    sender = FakeSender()
    log = RecordingLog()
    subject = deliverer(store, make_config("kept"), sender, log)

    assert subject.drain().delivered == 1
    assert subject.drain(ignore_schedule=True).delivered == 0

    assert sender.calls == [("kept", kept)]
    assert status_of(store) == {kept: DELIVERED, **dict.fromkeys(gone, PENDING)}
    assert [f["webhook"] for f in log.events("delivery.orphaned")] == ["gone"], "warned once"


def test_once_tries_each_pending_row_once_whatever_its_schedule(store: Store) -> None:
    (delivery,) = queued(store, [("fraud", "1")], "a")
    sender = FakeSender({delivery: [503, 503, 503]})
    subject = deliverer(store, make_config("a"), sender, RecordingLog())

    first = subject.drain(ignore_schedule=True)
    second = subject.drain(ignore_schedule=True)

    assert (first.retrying, first.failed_ids) == (1, [delivery])
    assert second.retrying == 1
    assert sender.calls == [("a", delivery)] * 2
    assert [a.status_code for a in attempts(store, delivery)] == [503, 503]


def test_a_row_dies_when_its_attempts_are_used_up(store: Store) -> None:
    (delivery,) = queued(store, [("fraud", "1")], "a")
    sender = FakeSender({delivery: [500, 500]})
    policy = RetryPolicy(initial_delay=2.0, max_attempts=2)
    subject = deliverer(store, make_config("a", retry=policy), sender, RecordingLog())

    assert subject.drain(ignore_schedule=True).retrying == 1
    assert subject.drain(ignore_schedule=True).dead == 1
    assert status_of(store) == {delivery: DEAD}


def test_each_outcome_is_counted_by_metrics(store: Store) -> None:
    (ok,) = queued(store, [("fraud", "1")], "deploy")
    (retry,) = queued(store, [("fraud", "2")], "slack")
    (dead,) = queued(store, [("churn", "1")], "slack")
    config = make_config("deploy", "slack")
    metrics = Metrics(config, store)
    sender = FakeSender({retry: [503], dead: [404]})
    log = RecordingLog()
    subject = deliverer(store, config, sender, log, observer=metrics)

    subject.drain()

    counted = {
        (s.labels["webhook"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
        if s.name == "mlflow_watcher_deliveries_total"
    }
    assert counted == {
        ("deploy", "delivered"): 1,
        ("deploy", "retrying"): 0,
        ("deploy", "dead"): 0,
        ("slack", "delivered"): 0,
        ("slack", "retrying"): 1,
        ("slack", "dead"): 1,
    }
    assert status_of(store) == {ok: DELIVERED, retry: PENDING, dead: DEAD}


def test_metrics_time_each_request_and_mark_when_a_webhook_began_failing(store: Store) -> None:
    (ok,) = queued(store, [("fraud", "1")], "deploy")
    (retry,) = queued(store, [("fraud", "2")], "slack")
    config = make_config("deploy", "slack")
    metrics = Metrics(config, store)
    sender = FakeSender({retry: [503]})
    subject = deliverer(store, config, metrics.timed(sender), RecordingLog(), observer=metrics)
    before = time.time()

    subject.drain()
    subject.close()

    samples = {
        (s.name, s.labels.get("webhook"), s.labels.get("le")): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    duration = "mlflow_watcher_delivery_duration_seconds"
    assert samples[(f"{duration}_count", "deploy", None)] == 1
    assert samples[(f"{duration}_count", "slack", None)] == 1
    assert samples[(f"{duration}_sum", "deploy", None)] == pytest.approx(0.001)  # FakeSender's
    assert samples[(f"{duration}_bucket", "deploy", "0.005")] == 1
    failing = "mlflow_watcher_delivery_failing_since_timestamp_seconds"
    assert samples[(failing, "deploy", None)] == 0
    assert before <= samples[(failing, "slack", None)] <= time.time()
    assert sender.closed
    assert status_of(store) == {ok: DELIVERED, retry: PENDING}


def test_an_observer_that_fails_does_not_fail_the_delivery(store: Store) -> None:
    (delivery,) = queued(store, [("fraud", "1")], "a")
    seen: list[tuple[str, Outcome]] = []

    class Broken:
        def observe_delivery(self, webhook: str, outcome: Outcome) -> None:
            seen.append((webhook, outcome))
            raise RuntimeError("counting failed")

    log = RecordingLog()
    subject = deliverer(store, make_config("a"), FakeSender(), log, observer=Broken())

    assert subject.drain().delivered == 1
    assert seen == [("a", Outcome.DELIVERED)]
    assert status_of(store) == {delivery: DELIVERED}
    assert log.events("delivery.crashed") == []


def test_close_closes_the_sender(store: Store) -> None:
    sender = FakeSender()
    deliverer(store, make_config("a"), sender, RecordingLog()).close()
    assert sender.closed


class LoadCountingStore(WatchedStore):
    """Counts how often the deliverer reads rows with their events."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.loads = 0

    def load_due(self, delivery_ids: Sequence[str]) -> list[DueDelivery]:
        self.loads += 1
        return super().load_due(delivery_ids)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_backlog_on_many_lanes_reads_its_rows_a_batch_at_a_time(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Rows are read with their events a few heads ahead of what is sent now, not once per
    answer: on PostgreSQL each read is a round trip the dispatcher waits for."""
    with open_store(kind, request, LoadCountingStore) as store:
        ids = queued(store, [(f"m{i}", "1") for i in range(60)], "w")
        config = make_config("w", workers=2)
        subject = deliverer(store, config, FakeSender(), RecordingLog(), monotonic=Clock())
        report = subject.drain()
        assert report.delivered == len(ids)
        assert store.loads <= len(ids) // 10, f"{store.loads} reads for {len(ids)} rows"
