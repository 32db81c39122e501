"""Failed sign-ins, counted per client address: after ``limit`` of them within ``window``
seconds, that address is refused (429, with Retry-After) until the oldest falls out of the
window, so a token or a password cannot be guessed at the speed of the network.

Kept in memory, per process: a restart forgets it, and each replica counts its own. Behind a
reverse proxy every client has the proxy's address, so one client's failures hold back every
sign-in through it for a while (sessions already open are not affected); a single-sign-on
proxy (``trusted_header``) needs no sign-in at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

LIMIT = 10
"""Failed sign-ins an address may make within WINDOW."""
WINDOW = 300.0
"""Seconds a failure counts for."""
MAX_ADDRESSES = 10_000
"""Addresses remembered at most: the oldest are forgotten first, so memory stays bounded."""


class LoginThrottle:
    def __init__(
        self,
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None: it may now."""
        with self._lock:
            failures = self._recent(address)
            if len(failures) < self.limit:
                return None
            return max(0.0, failures[0] + self.window - self._clock())

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._recent(address)
            failures.append(self._clock())
            self._failures[address] = failures
            while len(self._failures) > MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float]:
        """The address's failures still inside the window (older ones dropped)."""
        failures = self._failures.pop(address, deque())
        cutoff = self._clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if failures:
            self._failures[address] = failures  # re-inserted: the newest address is last
        return failures
