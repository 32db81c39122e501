"""Leadership among replicas sharing a PostgreSQL state: who polls and delivers, and until when
this replica may trust that it still does.

The lease lives in the database (``watcher.store.lease``) and expires on the database's clock.
This module keeps this replica's side of it: a standby tries to take the lease every
``standby_retry`` seconds; a leader renews it every ``renew_every`` seconds, and trusts it
only until its own monotonic clock says the lease could have run out since the last renewal
was sent (less a margin for clock drift). Past that point it starts no HTTP request, even while
the database cannot be reached to tell it anything. Its writes are fenced in the database
itself, so a leader that was paused or cut off commits nothing once another took over.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from watcher.errors import LockError, StoreError
from watcher.store import Store, Token

DRIFT = 0.02
"""The share of a lease this replica's clock may run slow against the database's."""


class Role(StrEnum):
    LEADER = "leader"
    STANDBY = "standby"


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how often a leader renews it and a standby asks for it."""

    lease: float
    renew_every: float
    standby_retry: float

    @classmethod
    def derive(cls, interval: float, lease: float | None = None) -> LeaseTimings:
        """From ``watch.interval``: a lease of twice the interval, within 10-25 s, so that a
        failover (the lease, then one poll) stays under a minute at the default 30 s interval
        and under 20 s at 5 s; renewed three times a lease; a standby asks every interval/20,
        within 0.1-0.5 s, so a released lease is taken in well under a second."""
        chosen = lease if lease is not None else min(max(2 * interval, 10.0), 25.0)
        return cls(
            lease=chosen,
            renew_every=chosen / 3,
            standby_retry=min(max(interval / 20, 0.1), 0.5),
        )


def new_holder() -> str:
    """This process's name in the lease: host, pid and a random part (a restarted process on
    the same host and pid is still a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leadership:
    """This replica's role; ``step()`` is called on a thread of its own, never by a poll."""

    def __init__(
        self,
        store: Store,
        timings: LeaseTimings,
        log: Any,
        *,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_acquired: Callable[[Token], None] | None = None,
    ) -> None:
        self.store = store
        self.timings = timings
        self.log = log
        self.holder = holder or new_holder()
        self._monotonic = monotonic
        self.on_acquired = on_acquired
        """Called on the leadership thread each time this replica takes the lease."""
        self.token: Token | None = None
        """The epoch this replica holds, or held last (its writes stay fenced by it)."""
        self._leading = False
        """Whether this replica took the lease and has not lost or released it since."""
        self.acquired_at: datetime | None = None
        self.takeovers = 0
        """How many times this replica took the lease."""
        self._trusted_until = 0.0
        self._next_renew = 0.0
        # Until it first leads, every fenced write of this replica fails: epoch 0 never holds.
        store.fence_token = Token(self.holder, 0)

    @property
    def role(self) -> Role:
        """Leader while this replica took the lease and it cannot have run out by its own
        clock; standby otherwise. A leader cut off from the database stops polling and
        sending, and shows as a standby (status line, /metrics, /readyz), as soon as its trust
        ends, without waiting for the renewal that cannot reach the database to fail."""
        return Role.LEADER if self.trusted() else Role.STANDBY

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def trusted(self) -> bool:
        """Whether this replica may start an HTTP request: it took the lease, and the lease
        cannot have expired yet by its own clock."""
        return self._leading and self._monotonic() < self._trusted_until

    def step(self) -> float:
        """One renewal or one attempt to lead; returns the seconds until the next step."""
        if self._leading:
            return self._renew()
        return self._try_acquire()

    def _trust_from(self, sent_at: float) -> float:
        lease = self.timings.lease
        return sent_at + lease * (1 - DRIFT) - min(0.5, lease / 10)

    def _try_acquire(self) -> float:
        sent_at = self._monotonic()
        try:
            token = self.store.acquire(self.holder, self.timings.lease)
        except StoreError as exc:
            self.log.warning("leader.unavailable", role=self.role.value, error=str(exc))
            return max(self.timings.standby_retry, 1.0)
        if token is None:
            return self.timings.standby_retry
        self.token = token
        self.store.fence_token = token
        self._trusted_until = self._trust_from(sent_at)
        self._next_renew = sent_at + self.timings.renew_every
        self.acquired_at = self.store.lease_info().acquired_at
        # Before the role changes: the delivery thread waits for it, so what an older epoch
        # left in flight is counted here, not claimed first by this replica's own sends.
        requeued = self.store.requeue_in_flight()
        self._leading = True
        self.takeovers += 1
        self.log.info(
            "leader.acquired",
            epoch=token.epoch,
            holder=self.holder,
            lease_s=self.timings.lease,
            **({"requeued_in_flight": requeued} if requeued else {}),
        )
        if self.on_acquired is not None:
            self.on_acquired(token)
        return max(0.0, self._next_renew - self._monotonic())

    def _renew(self) -> float:
        now = self._monotonic()
        if now < self._next_renew:
            return self._next_renew - now
        if now >= self._trusted_until:
            return self._lose("the lease ran out by this replica's clock before it was renewed")
        assert self.token is not None
        try:
            renewed = self.store.renew(self.token, self.timings.lease)
        except StoreError as exc:
            self.log.warning("leader.renew_failed", epoch=self.token.epoch, error=str(exc))
            # Try again soon, while the lease can still be trusted.
            return min(1.0, max(0.0, self._trusted_until - self._monotonic()))
        if not renewed:
            return self._lose("the lease expired or another replica took it")
        self._trusted_until = self._trust_from(now)
        self._next_renew = now + self.timings.renew_every
        return self.timings.renew_every

    def _lose(self, reason: str) -> float:
        assert self.token is not None
        self._leading = False
        self._trusted_until = 0.0
        self.log.warning("leader.lost", epoch=self.token.epoch, holder=self.holder, reason=reason)
        return self.timings.standby_retry

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop``: the body of the leadership thread."""
        while not stop.is_set():
            try:
                wait = self.step()
            except Exception as exc:  # a broken database must not end the election
                self.log.warning("leader.step_failed", error=f"{type(exc).__name__}: {exc}")
                wait = 1.0
            stop.wait(wait)

    @contextlib.contextmanager
    def held(self, *, wait: bool, stop: threading.Event | None = None) -> Iterator[None]:
        """Lead for the length of a block (``run --once`` on a shared state): take the lease
        (waiting for it with ``wait``, LockError otherwise), renew it on a thread, give it up
        at the end. ``stop`` (a signal) ends the wait with LockError: a timer stopping a
        waiting run must not need SIGKILL."""
        stop = stop or threading.Event()
        self.step()
        waiting = False
        while not self.is_leader:
            if not waiting:
                info = self.store.lease_info()
                if not wait:
                    raise LockError(
                        f"another watcher ({info.holder}, epoch {info.epoch}) leads the shared "
                        "state; use --wait-for-lock to wait for it"
                    )
                self.log.info("leader.waiting", holder=info.holder, epoch=info.epoch)
                waiting = True
            if stop.wait(self.timings.standby_retry):
                raise LockError("stopped while waiting for another watcher to give the lease up")
            self.step()
        done = threading.Event()
        renewer = threading.Thread(target=self.run, args=(done,), name="leadership", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join(5.0)
            self.release()

    def release(self) -> None:
        """Give the lease up (a clean stop): a standby takes over at its next retry."""
        if not self._leading or self.token is None:
            return
        self._leading = False
        self._trusted_until = 0.0
        try:
            released = self.store.release(self.token)
        except StoreError as exc:
            self.log.warning("leader.release_failed", epoch=self.token.epoch, error=str(exc))
            return
        if released:
            self.log.info("leader.released", epoch=self.token.epoch, holder=self.holder)
