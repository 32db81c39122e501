"""A bound of the watcher's own clock on every PostgreSQL round trip.

``statement_timeout`` is kept by the server: a connection whose packets vanish (a partition, a
proxy or load balancer that swallows them) never hears it, and TCP keepalives are answered by
whatever middlebox is still up, so psycopg would wait on the socket forever, holding a poll, a
delivery or the lease renewal with it. A guard gives each statement a deadline (the statement
timeout plus the connect timeout, past which the server would long have answered or cancelled
it); one thread per pool shuts the socket of a connection past its deadline down, so the call
fails at once (StateUnavailable to the caller) and the pool replaces the connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

TICK = 0.25
"""How often the watchdog looks at the deadlines (seconds)."""


class Guard:
    """One connection in use: its socket and the deadline of the statement under way."""

    def __init__(self, fd: int, bound: float) -> None:
        self.fd = fd
        self.bound = bound
        self.deadline: float | None = time.monotonic() + bound

    def rearm(self) -> None:
        """A statement starts now: it has until the bound from now."""
        self.deadline = time.monotonic() + self.bound

    def pause(self) -> None:
        """The caller holds the connection between statements (reading a stream's rows)."""
        self.deadline = None


class Watchdog:
    """The deadlines of the connections in use, and the thread that enforces them."""

    def __init__(self, bound: float, name: str) -> None:
        self.bound = bound
        self._name = name
        self._lock = threading.Lock()
        self._guards: set[Guard] = set()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, conn: Any) -> Iterator[Guard]:
        """``conn`` (a psycopg connection) is bounded for the length of the block."""
        guard = Guard(conn.fileno(), self.bound)
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        try:
            yield guard
        finally:
            # Under the lock: once out of the set, the socket is never shut by this guard,
            # so a connection back in the pool (or its reused descriptor) is safe.
            with self._lock:
                self._guards.discard(guard)

    def checked(self, check: Callable[[Any], None]) -> Callable[[Any], None]:
        """The pool's check of a connection before it is handed out, bounded too."""

        def bounded(conn: Any) -> None:
            with self.guard(conn):
                check(conn)

        return bounded

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(TICK):
            now = time.monotonic()
            with self._lock:
                for guard in self._guards:
                    if guard.deadline is not None and now > guard.deadline:
                        guard.deadline = None
                        _shut(guard.fd)


def _shut(fd: int) -> None:
    """Shut a socket down for both directions: a call waiting on it wakes and fails."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
