"""(h): delivery throughput through the running daemon. The backlog (f) drains in process is
committed into the state (a) left, the daemon started on it: it polls every 2 s while its
delivery thread sends the backlog, and the receiver's arrival times give the rate."""

from __future__ import annotations

import time
from typing import Any

from bench.common import INTERVAL, MODELS, STEADY, logged_at, say, watcher_toml
from bench.states import States
from tests.e2e.harness import Daemon, MlflowServer, Receiver, wait_for

DRAIN_TIMEOUT = 900.0


def daemon_drain(server: MlflowServer, states: States, backlog: int) -> dict[str, Any]:
    """The daemon drains ``backlog`` queued deliveries (the 5,000 and the few transitions (a)
    made); timed from the first arrival to the last (the rate), and from the process start to
    the last (start-up and the first poll included)."""
    receiver = Receiver()
    receiver.start()
    config = watcher_toml(
        states.workdir / f"drain-{states.name}.toml",
        server.url,
        states.path(STEADY),
        receiver.url,
        watch=f'interval = "{INTERVAL:g}s"',
    )
    daemon = Daemon(config, states.env(STEADY))
    try:
        started = time.monotonic()
        daemon.start()
        wait_for(
            lambda: len(receiver.deliveries()) >= backlog,
            DRAIN_TIMEOUT,
            f"{backlog} deliveries from the daemon",
            interval=0.2,
        )
        arrivals = sorted(d.at for d in receiver.deliveries())
        ids = {d.header("X-MLflow-Delivery-Id") for d in receiver.deliveries()}
        polls = daemon.logged("poll.finished")
        first, last = arrivals[0], arrivals[backlog - 1]
        during = [p for p in polls if first <= logged_at(p) <= last]
        seconds = last - first
        say(f"(h) {states.name}: {backlog} deliveries in {seconds:.1f}s through the daemon")
        return {
            "backlog": backlog,
            "distinct_ids": len(ids),
            "lanes": MODELS,
            "interval_s": INTERVAL,
            "first_arrival_after_start_s": round(first - started, 3),
            "seconds": round(seconds, 3),
            "events_per_s": round(backlog / seconds, 1) if seconds > 0 else None,
            "events_per_s_from_start": round(backlog / (last - started), 1),
            "polls_while_draining": len(during),
            "first_poll_read": polls[0].get("read") if polls else None,
        }
    finally:
        if daemon.alive():
            daemon.terminate()
        receiver.stop()
