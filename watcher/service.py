"""Running: the APScheduler daemon and the one-shot run, with clean shutdown on signals."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from types import FrameType
from typing import Any

from watcher.config import Config
from watcher.deliver import Deliverer, DrainReport
from watcher.pipeline import CycleReport, Pipeline

DRAIN_EVERY = 1.0
"""Seconds between outbox checks for retries that have come due."""


@dataclass
class OnceResult:
    cycle: CycleReport
    drain: DrainReport
    pending: int
    dead: int


def run_once(
    pipeline: Pipeline, deliverer: Deliverer, stopping: threading.Event | None = None
) -> OnceResult:
    """One cycle, then every pending delivery is tried once (cron's interval is the backoff).

    Deliveries are attempted even when the registry could not be read: what was queued by an
    earlier run still goes out.
    """
    cycle = pipeline.run_cycle()
    drain = deliverer.drain(ignore_schedule=True, stop=stopping)
    prune(pipeline)
    counts = pipeline.store.status_counts()
    return OnceResult(
        cycle=cycle,
        drain=drain,
        pending=sum(c.get("pending", 0) for c in counts.values()),
        dead=sum(c.get("dead", 0) for c in counts.values()),
    )


PRUNE_EVERY = 3600.0
"""Seconds between prunes of delivered rows older than delivery.retention."""


def prune(pipeline: Pipeline) -> int:
    """Delivered rows past retention go; dead ones stay until someone purges them."""
    pruned = pipeline.store.prune_delivered(pipeline.config.delivery.retention, time.time())
    if pruned:
        pipeline.log.info("state.pruned", delivered=pruned)
    return pruned


class Service:
    """The daemon: a poll job on the interval, a delivery thread, signals for a clean stop."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        deliverer: Deliverer,
        log: Any,
        stopping: threading.Event | None = None,
    ) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.config = config
        self.pipeline = pipeline
        self.deliverer = deliverer
        self.log = log
        self.stopping = stopping or threading.Event()
        self.wake = threading.Event()
        self.scheduler = BlockingScheduler(timezone="UTC")
        self._cycles = 0

    def poll(self) -> None:
        if self.stopping.is_set():
            return
        try:
            report = self.pipeline.run_cycle()
            self._cycles += 1
            if report.queued:
                self.wake.set()
        except Exception as exc:  # a bug or a broken disk must not kill the daemon silently
            self.log.exception("poll.crashed", error=f"{type(exc).__name__}: {exc}")

    def maintain(self) -> None:
        try:
            prune(self.pipeline)
        except Exception as exc:
            self.log.exception("state.prune_failed", error=f"{type(exc).__name__}: {exc}")

    def deliver(self) -> None:
        """The delivery thread: drains until stopped, woken early by polls that queued rows."""
        while not self.stopping.is_set():
            try:
                self.deliverer.drain(stop=self.stopping, wake=self.wake, forever=True)
            except Exception as exc:
                self.log.exception("delivery.crashed", error=f"{type(exc).__name__}: {exc}")
                self.stopping.wait(DRAIN_EVERY)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.wake.set()
        self.log.info("service.stopping", signal=signal.Signals(signum).name)
        # shutdown(wait=True) waits for the running poll; it cannot run inside the handler,
        # which interrupts the scheduler's own thread.
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}).start()

    def run(self) -> int:
        from datetime import datetime

        interval = self.config.watch.interval
        self.scheduler.add_job(
            self.poll,
            "interval",
            seconds=interval,
            id="poll",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )
        self.scheduler.add_job(
            self.maintain,
            "interval",
            seconds=PRUNE_EVERY,
            id="prune",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.stopping.is_set():  # asked to stop while starting up
            self.log.info("service.stopped", cycles=0, uptime_s=0)
            return 0
        delivery = threading.Thread(target=self.deliver, name="delivery", daemon=True)
        delivery.start()
        self.log.info(
            "service.started",
            interval_s=interval,
            registry=self.pipeline.registry,
            webhooks=[w.name for w in self.config.webhooks],
            state=str(self.pipeline.store.path),
        )
        started = time.monotonic()
        self.scheduler.start()
        self.stopping.set()
        self.wake.set()
        # The drain gives in-flight requests shutdown_grace, then returns; what is left stays
        # queued and goes out after the next start.
        delivery.join(self.config.delivery.shutdown_grace + 2 * DRAIN_EVERY)
        self.deliverer.close()
        self.log.info(
            "service.stopped", cycles=self._cycles, uptime_s=round(time.monotonic() - started)
        )
        return 0
