"""Running: the APScheduler daemon and the one-shot run, with clean shutdown on signals."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from types import FrameType
from typing import TYPE_CHECKING, Any

from watcher import state_meta as sm
from watcher.config import Config
from watcher.console import start_console
from watcher.deliver import Deliverer, DrainReport
from watcher.errors import StoreError
from watcher.health import HealthServer
from watcher.leader import Leadership
from watcher.metrics import Metrics
from watcher.notify import Notifier
from watcher.pipeline import CycleReport, Pipeline
from watcher.store import DEAD, PENDING

if TYPE_CHECKING:
    from watcher.console.server import ConsoleServer

DRAIN_EVERY = 1.0
"""Seconds between outbox checks for retries that have come due."""
TICK_EVERY = 1.0
"""Seconds between the scheduler's heartbeats (liveness, and the systemd watchdog)."""
READY_POLLS = 3
"""/readyz fails once no poll has succeeded for this many intervals."""
HINT_GATHER = 0.2
"""Seconds a hint waits for those that come with it (MLflow sends a version's creation and
each of its tags apart) before the poll they wake starts."""


@dataclass
class OnceResult:
    cycle: CycleReport
    drain: DrainReport
    pending: int
    """Deliveries left pending in all, after the drain."""


def run_once(
    pipeline: Pipeline,
    deliverer: Deliverer,
    stopping: threading.Event | None = None,
    metrics: Metrics | None = None,
) -> OnceResult:
    """One cycle, then every pending delivery is tried once (cron's interval is the backoff).

    The cycle reads everything: cron runs are rare, and must not miss a tag change waiting for
    a cadence. Deliveries are attempted even when the registry could not be read: what was
    queued by an earlier run still goes out.
    """
    cycle = pipeline.run_cycle(full=True)
    if metrics is not None:
        metrics.observe_cycle(cycle)
    drain = deliverer.drain(ignore_schedule=True, stop=stopping)
    prune(pipeline)
    counts = pipeline.store.status_counts()
    pending = sum(c.get(PENDING, 0) for c in counts.values())
    return OnceResult(cycle=cycle, drain=drain, pending=pending)


PRUNE_EVERY = 3600.0
"""Seconds between prunes of delivered rows older than delivery.retention."""


def prune(pipeline: Pipeline) -> None:
    """Delivered rows past retention go; dead ones stay until someone purges them."""
    pruned = pipeline.store.prune_delivered(pipeline.config.delivery.retention, time.time())
    if pruned:
        pipeline.log.info("state.pruned", delivered=pruned)


def role_text(leadership: Leadership) -> str:
    """This replica's role for people (/readyz, STATUS=): ``leader, epoch 3`` or ``standby``."""
    token = leadership.token
    if leadership.is_leader and token is not None:
        return f"{leadership.role.value}, epoch {token.epoch}"
    return leadership.role.value


class Service:
    """The daemon: a poll job on the interval, a delivery thread, signals for a clean stop.

    Around them: systemd's notify protocol (READY=1 once running, STATUS= after each poll,
    WATCHDOG=1 while the scheduler runs jobs and no poll hangs, STOPPING=1 on a signal), and,
    with ``[server] listen``, the /healthz, /readyz and /metrics server; with ``[hints]``, its
    hints endpoint and a thread that starts a poll at each verified hint.
    """

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        deliverer: Deliverer,
        log: Any,
        stopping: threading.Event | None = None,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.config = config
        self.pipeline = pipeline
        self.deliverer = deliverer
        self.log = log
        self.stopping = stopping or threading.Event()
        self.wake = threading.Event()
        self.scheduler = BlockingScheduler(timezone="UTC")
        self.metrics = metrics
        self.notifier = notifier or Notifier()
        self.server: HealthServer | None = None
        self.console: ConsoleServer | None = None
        self.leadership = leadership
        """Replicas on a shared state: only the leader polls and delivers. None: SQLite."""
        if leadership is not None:
            leadership.on_acquired = self.took_over
        self._cycles = 0
        self._notified_role: str | None = None
        """The role the last STATUS= line told systemd (shared state only)."""
        self._delivery: threading.Thread | None = None
        self._leading: threading.Thread | None = None
        self._poll_started: float | None = None
        """time.monotonic() when the running poll started; None between polls."""
        self._last_ok: float | None = None
        """time.monotonic() when a poll of this process last read the registry completely."""
        self._last_ok_duration = 0.0
        self._led_since: float | None = None
        """time.monotonic() when this replica last took the lease (shared state only)."""
        self._last_tick: float | None = None
        self.hints = pipeline.hinted
        """With ``[hints]``: each verified hint from MLflow starts a poll at once."""
        self._hints_thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self._poll_again = False
        """A hint came while a poll ran: poll again as soon as it ends."""
        self.hung_after = max(60.0, 2 * config.watch.interval, 10 * config.mlflow.timeout)
        """A poll running longer than this counts as hung: no more watchdog pings, /healthz
        fails, and systemd (WatchdogSec=) or Kubernetes (livenessProbe) restarts the daemon."""

    def poll(self) -> None:
        """The poll job: one cycle, then wake the delivery thread if it queued anything."""
        if self.stopping.is_set():
            return
        if self.leadership is not None and not self.leadership.is_leader:
            return  # a standby: the leader polls
        with self._poll_lock:
            self._poll_started = time.monotonic()
        try:
            report = self.pipeline.run_cycle()
            self._cycles += 1
            if report.ok:
                self._last_ok = time.monotonic()
                self._last_ok_duration = report.duration_ms / 1000
            if report.queued:
                self.wake.set()
            self._after_poll(report)
        except StoreError as exc:  # the database went away, or this replica lost the lease
            self.log.warning("poll.not_committed", error=str(exc))
        except Exception as exc:  # a bug or a broken disk must not kill the daemon silently
            self.log.exception("poll.crashed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._poll_lock:
                self._poll_started = None
                again, self._poll_again = self._poll_again, False
        self._record_hints()
        if again:
            self._poll_now()
        if self.notifier.watchdog_interval is not None and self.alive()[0]:
            self.notifier.watchdog()

    def _poll_now(self) -> None:
        """Run the poll job at once (it keeps its interval after)."""
        from datetime import datetime

        with contextlib.suppress(Exception):  # the scheduler may not be running yet
            self.scheduler.modify_job("poll", next_run_time=datetime.now(UTC))

    def await_hints(self) -> None:
        """The hints thread: each verified hint (and those that come with it) starts a poll
        at once, or right after the one running, which may have read before it came."""
        assert self.hints is not None
        arrived = self.hints.arrived
        while not self.stopping.is_set():
            if not arrived.wait(timeout=1.0):
                continue
            self.stopping.wait(HINT_GATHER)
            arrived.clear()
            with self._poll_lock:
                if self._poll_started is not None:
                    self._poll_again = True
                    continue
            self._poll_now()

    def _record_hints(self) -> None:
        """The hint counts in the state meta, for `status`, when they changed and the poll's
        commit did not take them along (a skipped or failed commit, hints that came after it;
        leader only: this runs after its polls)."""
        if self.hints is None:
            return
        written = self.hints.unrecorded()
        if not written:
            return
        try:
            self.pipeline.store.set_meta(written)
            self.hints.recorded(written)
        except Exception as exc:  # the next poll tries again
            self.log.warning("hints.not_recorded", error=f"{type(exc).__name__}: {exc}")

    def _after_poll(self, report: CycleReport) -> None:
        if self.metrics is not None:
            self.metrics.observe_cycle(report)
        if self.notifier.enabled:
            self.notifier.status(self.status_line(report))
            if self.leadership is not None:
                self._notified_role = self.leadership.role.value

    def status_line(self, report: CycleReport) -> str:
        """One line for `systemctl status`: the role on a shared state, the last poll and the
        outbox."""
        at = time.strftime("%H:%M:%SZ", time.gmtime())
        role = "" if self.leadership is None else f"{role_text(self.leadership)}; "
        if not report.ok:
            return f"{role}last poll failed at {at}: {report.error}"
        outbox = self.pipeline.store.summary()
        return (
            f"{role}last poll ok at {at} in {report.duration_ms:.0f} ms: {report.models} models, "
            f"{report.versions} versions, {len(report.events)} events; "
            f"{outbox.total(PENDING)} pending, {outbox.total(DEAD)} dead deliveries"
        )

    def tick(self) -> None:
        """The scheduler's heartbeat: proves it still runs jobs, and feeds systemd's watchdog
        while the daemon is healthy (a hung poll or a dead delivery thread stops the pings)."""
        self._last_tick = time.monotonic()
        if self.notifier.watchdog_interval is not None and self.alive()[0]:
            self.notifier.watchdog()
        if self.leadership is not None and self.notifier.enabled:
            self._notify_role()

    def _notify_role(self) -> None:
        """A new STATUS= line when this replica's role changed: a standby never polls, so
        without it `systemctl status` would show the start's line for as long as it waits."""
        assert self.leadership is not None
        role = self.leadership.role.value
        if role == self._notified_role:
            return
        self._notified_role = role
        at = time.strftime("%H:%M:%SZ", time.gmtime())
        doing = "polling" if self.leadership.is_leader else "another replica leads"
        self.notifier.status(f"{role_text(self.leadership)}, since {at}; {doing}")

    def alive(self) -> tuple[bool, str]:
        """Liveness: the scheduler runs jobs, no poll hangs, the delivery thread runs."""
        now = time.monotonic()
        if self._last_tick is None or now - self._last_tick > max(10.0, 5 * self._tick_every):
            return False, "the scheduler has not run its heartbeat job recently"
        started = self._poll_started
        if started is not None and now - started > self.hung_after:
            return False, f"a poll has been running for {now - started:.0f}s (hung)"
        if self._delivery is not None and not self._delivery.is_alive():
            return False, "the delivery thread has stopped"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Readiness: a poll succeeded within READY_POLLS intervals and the state is writable.
        On a shared state the answer names the role: a healthy standby is ready too."""
        if self.stopping.is_set():
            return False, "stopping"
        if self.leadership is None:
            return self._polls_ready()
        if not self.leadership.is_leader:
            return self._standby_ready()
        ok, reason = self._polls_ready()
        return ok, f"{reason} ({role_text(self.leadership)})"

    def _polls_ready(self) -> tuple[bool, str]:
        """Polls go well: one succeeded within READY_POLLS intervals (of taking the lease over,
        for a replica that just did: its first poll is under way), and the state is writable."""
        last = self._last_ok
        if self._led_since is not None:
            last = max(last or 0.0, self._led_since)
        if last is None:
            return False, "no poll has read the registry yet"
        window = READY_POLLS * max(self.config.watch.interval, self._last_ok_duration)
        age = time.monotonic() - last
        if age > window:
            return False, f"no successful poll for {age:.0f}s (more than {window:g}s)"
        try:
            self.pipeline.store.set_meta(sm.meta(sm.READY_CHECKED_AT.entry(time.time())))
        except Exception as exc:
            return False, f"the state is not writable: {exc}"
        return True, "ok"

    def _standby_ready(self) -> tuple[bool, str]:
        """A healthy standby is ready (it is not a failure): it can read the shared state."""
        try:
            info = self.pipeline.store.lease_info()
        except Exception as exc:
            return False, f"standby: the state cannot be read: {exc}"
        leader = f"{info.holder} (epoch {info.epoch})" if info.valid else "none"
        return True, f"ok (standby; leader: {leader})"

    @property
    def _tick_every(self) -> float:
        watchdog = self.notifier.watchdog_interval
        return TICK_EVERY if watchdog is None else min(TICK_EVERY, watchdog)

    def maintain(self) -> None:
        """The hourly prune, by the leader only: a standby writes nothing to a shared state."""
        if self.leadership is not None and not self.leadership.is_leader:
            return
        try:
            prune(self.pipeline)
        except Exception as exc:
            self.log.exception("state.prune_failed", error=f"{type(exc).__name__}: {exc}")

    def deliver(self) -> None:
        """The delivery thread: drains until stopped, woken early by polls that queued rows."""
        while not self.stopping.is_set():
            if self.leadership is not None and not self.leadership.trusted():
                self.stopping.wait(self.leadership.timings.standby_retry)
                continue
            try:
                self.deliverer.drain(stop=self.stopping, wake=self.wake, forever=True)
            except StoreError as exc:  # the database went away: one line, then try again
                self.log.warning("delivery.paused", error=str(exc))
                self.stopping.wait(DRAIN_EVERY)
            except Exception as exc:
                self.log.exception("delivery.crashed", error=f"{type(exc).__name__}: {exc}")
                self.stopping.wait(DRAIN_EVERY)

    def lead(self) -> None:
        """The leadership thread: renew (leader) or try to take (standby) the lease, on its
        own thread so that a long poll never delays a renewal."""
        assert self.leadership is not None
        self.leadership.run(self.stopping)

    def took_over(self, _token: object) -> None:
        """Called by the leadership when this replica took the lease: resume from the
        committed snapshot, as a restarted daemon does, and poll and deliver at once."""

        self._led_since = time.monotonic()
        self.pipeline.resume()
        self.wake.set()
        self._poll_now()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.wake.set()
        self.notifier.stopping(f"stopping on {signal.Signals(signum).name}")
        self.log.info("service.stopping", signal=signal.Signals(signum).name)
        # shutdown(wait=True) waits for the running poll; it cannot run inside the handler,
        # which interrupts the scheduler's own thread.
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}).start()

    def run(self) -> int:
        """Run until a signal: polls on the interval, deliveries on their own thread.

        Returns the exit status (0: a clean stop).
        """
        self._schedule()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.stopping.is_set():  # asked to stop while starting up
            self.notifier.stopping()
            self.log.info("service.stopped", cycles=0, uptime_s=0)
            return 0
        self._start()
        started = time.monotonic()
        try:
            self.scheduler.start()
        finally:
            self._stop()
        self.log.info(
            "service.stopped", cycles=self._cycles, uptime_s=round(time.monotonic() - started)
        )
        self.notifier.close()
        return 0

    def _schedule(self) -> None:
        """The poll on the interval, the prune hourly, the heartbeat every second; the first
        of each at once."""
        from datetime import datetime

        now = datetime.now(UTC)
        jobs: list[tuple[str, Callable[[], None], float, dict[str, Any]]] = [
            ("poll", self.poll, self.config.watch.interval, {"misfire_grace_time": None}),
            ("prune", self.maintain, PRUNE_EVERY, {}),
            ("tick", self.tick, self._tick_every, {}),
        ]
        for job_id, job, seconds, extra in jobs:
            self.scheduler.add_job(
                job,
                "interval",
                seconds=seconds,
                id=job_id,
                max_instances=1,
                coalesce=True,
                next_run_time=now,
                **extra,
            )

    def _start(self) -> None:
        """The health server (if any), the delivery thread, then READY=1 for systemd."""
        if self.config.server.listen is not None:
            # Bound before READY=1: a port that cannot be had fails the start, not later.
            self.server = HealthServer(
                self.config.server,
                alive=self.alive,
                ready=self.ready,
                metrics=self.metrics,
                hints=self.hints,
                hints_path=self.config.hints.path,
                log=self.log,
            )
            self.server.start()
        if self.hints is not None:
            self._hints_thread = threading.Thread(
                target=self.await_hints, name="hints", daemon=True
            )
            self._hints_thread.start()
        if self.config.console.listen is not None:
            # Bound before READY=1 too; once serving, its errors are its pages', never the
            # daemon's.
            self.console = start_console(self.config, self.pipeline.store)
        self._delivery = threading.Thread(target=self.deliver, name="delivery", daemon=True)
        self._delivery.start()
        if self.leadership is not None:
            self._leading = threading.Thread(target=self.lead, name="leadership", daemon=True)
            self._leading.start()
        self._last_tick = time.monotonic()
        self.log.info(
            "service.started",
            interval_s=self.config.watch.interval,
            registry=self.pipeline.registry,
            webhooks=[w.name for w in self.config.webhooks],
            state=self.pipeline.store.location,
            **({"listen": self.config.server.display_listen} if self.server else {}),
            **({"console": self.config.console.display_listen} if self.console else {}),
            **({"hints": self.config.hints.path} if self.hints is not None else {}),
        )
        # The config is valid, the state is open and locked, the server (if any) is bound.
        self.notifier.ready(f"started; first poll of {self.pipeline.registry} under way")

    def _stop(self) -> None:
        """After the scheduler: let the delivery thread finish, then close what was opened.

        The drain gives in-flight requests shutdown_grace, then returns; what is left stays
        queued and goes out after the next start.
        """
        self.stopping.set()
        self.wake.set()
        if self._delivery is not None:
            self._delivery.join(self.config.delivery.shutdown_grace + 2 * DRAIN_EVERY)
        if self.leadership is not None:
            # In-flight requests have finished or been abandoned: hand over at once.
            if self._leading is not None:
                self._leading.join(5.0)
            self.leadership.release()
        self.deliverer.close()
        if self.server is not None:
            self.server.stop()
        if self.console is not None:
            self.console.stop()
