"""Prometheus metrics: counters of what the watcher did, gauges read from the state at scrape.

Counters (polls, events, deliveries) are kept in this process and updated from the reports of
each poll and from each delivery's outcome. Gauges (what is watched, the outbox, the last good
poll) are computed from the state file when scraped, so they are right even for work done by
an earlier process or by ``run --once``. The leader gauges are read from this replica's
``Leadership`` at scrape: every replica of a shared state is scraped on its own, and only this
process knows whether it leads. Labels stay bounded: results, event types and webhook names
from the config; never model names.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher import __version__
from watcher import state_meta as sm
from watcher.config import Config, WebhookConfig
from watcher.deliver import DeliverySender, Outcome, Result
from watcher.hints import RESULTS as HINT_RESULTS
from watcher.hints import HintBox
from watcher.leader import Leadership
from watcher.model import PROMPT_EVENTS, SUPPORTED_EVENTS, Event
from watcher.store import DEAD, PENDING, Store

if TYPE_CHECKING:
    from watcher.pipeline import CycleReport

PREFIX = "mlflow_watcher"
POLL_RESULTS = ("ok", "failed")
DELIVERY_RESULTS = tuple(outcome.value for outcome in Outcome)
# From a few milliseconds (an incremental read of a small registry) to minutes (a full scan of
# 100k versions).
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# From a receiver on the same host to one at the default 10 s timeout and past it.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """One dedicated registry (not the global one): only the watcher's own series."""

    def __init__(
        self,
        config: Config,
        store: Store,
        leadership: Leadership | None = None,
        hints: HintBox | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = self._counter("polls", "Polls of the registry, by result.", "result")
        self.poll_duration = self._histogram(
            "poll_duration",
            "Time one poll took (read, detect, commit), failed polls included.",
            POLL_BUCKETS,
        )
        self.events = self._counter(
            "events_detected", "Events detected in the registry, by type.", "type"
        )
        self.deliveries = self._counter(
            "deliveries",
            "Delivery attempts by webhook and result (retrying: failed, queued to try again).",
            "webhook",
            "result",
        )
        self.delivery_duration = self._histogram(
            "delivery_duration",
            "Time one delivery attempt took, from the request to the answer's start read "
            "(timeouts and refused connections included), by webhook.",
            DELIVERY_BUCKETS,
            "webhook",
        )
        self.failing_since = self._gauge(
            "delivery_failing_since_timestamp_seconds",
            "Unix time of this process's first failed attempt since the webhook's last success "
            "(0 while its last attempt succeeded, or none failed).",
            "webhook",
        )
        self._failing: dict[str, float] = {}
        self._failing_lock = threading.Lock()
        self._gauge(
            "poll_interval_seconds", "Seconds between polls (watch.interval): the unit of poll lag."
        ).set(config.watch.interval)
        build = Info(f"{PREFIX}_build", "The watcher's version.", registry=self.registry)
        build.info({"version": __version__, "python": platform.python_version()})
        # Every bounded label value exists from the start, so rate() and alerts see zeros.
        for result in POLL_RESULTS:
            self.polls.labels(result=result)
        for event_type in SUPPORTED_EVENTS | (PROMPT_EVENTS if config.watches_prompts else set()):
            self.events.labels(type=event_type.value)
        for webhook in config.webhooks:
            for result in DELIVERY_RESULTS:
                self.deliveries.labels(webhook=webhook.name, result=result)
            self.delivery_duration.labels(webhook=webhook.name)
            self.failing_since.labels(webhook=webhook.name)
        self.registry.register(StateCollector(store, config))
        self.registry.register(LeaderCollector(leadership))
        if hints is not None:
            self.registry.register(HintsCollector(hints))

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter of this registry, named under the watcher's prefix, by bounded labels."""
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...], *labels: str
    ) -> Histogram:
        """A histogram of seconds (``name`` without the unit)."""
        return Histogram(
            f"{PREFIX}_{name}_seconds",
            documentation,
            labels,
            buckets=buckets,
            registry=self.registry,
        )

    def observe_cycle(self, report: CycleReport) -> None:
        if getattr(report, "skipped", False):
            return  # backing off after failures: no read was tried, so no poll to count
        self.polls.labels(result="ok" if report.ok else "failed").inc()
        self.poll_duration.observe(report.duration_ms / 1000)
        for event in report.events:
            self.events.labels(type=event.type.value).inc()

    def observe_delivery(self, webhook: str, outcome: Outcome) -> None:
        """Counts one attempt's outcome as the deliverer records it, in the daemon and in
        ``--once`` alike (the Deliverer's ``observer``). Also keeps when the webhook's current
        run of failures began: "failing for an hour" is that age, which counters over a window
        cannot tell from one failure of a webhook that is seldom called."""
        self.deliveries.labels(webhook=webhook, result=outcome.value).inc()
        with self._failing_lock:  # attempts of one webhook end on several threads
            if outcome is Outcome.DELIVERED:
                self._failing.pop(webhook, None)
            elif webhook not in self._failing:
                self._failing[webhook] = time.time()
            else:
                return
            self.failing_since.labels(webhook=webhook).set(self._failing.get(webhook, 0.0))

    def timed(self, sender: DeliverySender) -> DeliverySender:
        """``sender`` with each request's latency observed by webhook (the deliverer's sender:
        it times the request itself, and the observer hears only the outcome)."""
        return _TimedSender(sender, self.delivery_duration)

    def write_textfile(self, path: Path) -> None:
        """node-exporter's textfile format, written to a temporary file and renamed into
        place, so the collector never reads half a file."""
        write_to_textfile(str(path), self.registry)


class _TimedSender:
    """A DeliverySender that observes the latency its inner sender measured."""

    def __init__(self, inner: DeliverySender, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        result = self._inner.post(webhook, event, delivery_id)
        if result.status_code is not None or result.latency_ms > 0:  # a request was made
            self._histogram.labels(webhook=webhook.name).observe(result.latency_ms / 1000)
        return result

    def close(self) -> None:
        self._inner.close()


class StateCollector(Collector):
    """Gauges from the state file, computed at each scrape with a few indexed queries."""

    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self._webhooks = [w.name for w in config.webhooks]

    def describe(self) -> list[Metric]:
        return []  # collected on demand only; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        """The gauges, from the state meta (watcher.state_meta) and the outbox counts."""
        meta = self._store.all_meta()
        summary = self._store.summary()
        now = time.time()
        for key, help_text in (
            (sm.MODELS, "Registered models watched, as of the last good poll."),
            (sm.VERSIONS, "Model versions watched, as of the last good poll."),
            (sm.PROMPTS, "MLflow 3 prompts watched (not among the models), last good poll."),
            (sm.PROMPT_VERSIONS, "Their versions (not among the versions), last good poll."),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{key.name}_watched", help_text)
            gauge.add_metric([], float(key.get(meta) or 0))
            yield gauge
        webhooks = sorted({*self._webhooks, *summary.counts})
        for status, help_text in (
            (PENDING, "Deliveries waiting in the outbox (due now or retrying later), by webhook."),
            (DEAD, "Dead deliveries kept in the outbox until redelivered or purged, by webhook."),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_outbox_{status}", help_text, labels=["webhook"])
            for webhook in webhooks:
                gauge.add_metric([webhook], float(summary.counts.get(webhook, {}).get(status, 0)))
            yield gauge
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_pending_age_seconds",
            "Age of the oldest pending delivery (0 when nothing is pending).",
        )
        pending_since = summary.oldest_pending
        oldest.add_metric([], 0.0 if pending_since is None else max(0.0, now - pending_since))
        yield oldest
        yield from _scan_gauges(meta)
        yield from _last_poll_gauges(meta)


class LeaderCollector(Collector):
    """This replica's part in the leader election, at each scrape. Without a leadership (a
    SQLite state: one process, holding the file lock) the process always leads, at epoch 0,
    and never took a lease over."""

    def __init__(self, leadership: Leadership | None) -> None:
        self._leadership = leadership

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ship = self._leadership
        leads = ship is None or ship.is_leader
        epoch = 0 if ship is None or ship.token is None else ship.token.epoch
        leader = GaugeMetricFamily(
            f"{PREFIX}_leader",
            "1 while this replica leads (polls and delivers), 0 while it is a standby; "
            "always 1 on a SQLite state.",
        )
        leader.add_metric([], 1.0 if leads else 0.0)
        yield leader
        held = GaugeMetricFamily(
            f"{PREFIX}_leader_epoch",
            "The lease epoch this replica holds, or held last (0: it never led, or SQLite).",
        )
        held.add_metric([], float(epoch))
        yield held
        takeovers = CounterMetricFamily(
            f"{PREFIX}_leader_takeovers", "Times this replica took the leader lease."
        )
        takeovers.add_metric([], float(0 if ship is None else ship.takeovers))
        yield takeovers


class HintsCollector(Collector):
    """The hints this process received (``[hints]``), by result, and when it last accepted
    one: read from its HintBox at each scrape."""

    def __init__(self, hints: HintBox) -> None:
        self._hints = hints

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self._hints.stats()
        total = CounterMetricFamily(
            f"{PREFIX}_hints",
            "MLflow's native webhooks received as hints, by result (accepted; replayed: seen "
            "before or signed too long ago; forged: bad or missing signature; invalid: a body "
            "that names no model).",
            labels=["result"],
        )
        for result in HINT_RESULTS:
            total.add_metric([result], float(stats.counts.get(result, 0)))
        yield total
        if stats.last_accepted_at is not None:
            last = GaugeMetricFamily(
                f"{PREFIX}_last_hint_timestamp_seconds",
                "Unix time of the last hint this process accepted.",
            )
            last.add_metric([], stats.last_accepted_at)
            yield last


def _last_poll_gauges(meta: dict[str, str]) -> Iterator[Metric]:
    """The last poll and the last good one, once there was one (absent before the first)."""
    result = sm.LAST_POLL_RESULT.get(meta)
    for key, name, help_text in (
        (sm.LAST_POLL_AT, "last_poll", "Unix time of the last poll, good or failed."),
        (
            sm.LAST_POLL_OK_AT,
            "last_successful_poll",
            "Unix time of the last poll that read the registry completely.",
        ),
    ):
        at = key.get(meta)
        if at is not None:
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}_timestamp_seconds", help_text)
            gauge.add_metric([], at)
            yield gauge
    if result is not None:
        success = GaugeMetricFamily(
            f"{PREFIX}_last_poll_success", "1 when the last poll read the registry, 0 if it failed."
        )
        success.add_metric([], 1.0 if result == sm.POLL_OK else 0.0)
        yield success


def _scan_gauges(meta: dict[str, str]) -> Iterator[Metric]:
    """The scan cadences and lengths, for the scans that have run (a --once run has none)."""
    for keys, unit, help_text in (
        (sm.SCAN_EVERY, "interval", "Time between full scans, as configured or chosen by auto."),
        (sm.SCAN_TOOK, "duration", "How long the last full scan took."),
    ):
        known = {
            scan: seconds for scan, key in keys.items() if (seconds := key.get(meta)) is not None
        }
        if known:
            gauge = GaugeMetricFamily(f"{PREFIX}_scan_{unit}_seconds", help_text, labels=["scan"])
            for scan, seconds in known.items():
                gauge.add_metric([scan], seconds)
            yield gauge
