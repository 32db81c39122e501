"""(j) The delivery console on a delivery log as long as the registry is big: ``size``
deliveries (with their events and attempts) over 1,000 models and five webhooks, served by
`mlflow-watcher console` in a process of its own, each page fetched over HTTP as a browser would
(with the bearer token), timed from the request to the last byte of the answer."""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench.common import MODELS, TARGETS, percentile, say
from bench.states import States
from tests.e2e.harness import wait_for
from tests.helpers import free_port
from watcher.model import Event, EventType, SnapshotDelta, make_delivery_id
from watcher.payloads import example_event
from watcher.store import NewDelivery, Store

WEBHOOKS = ("jenkins", "gitlab", "github", "slack", "audit")
TYPES = (
    EventType.MODEL_VERSION_CREATED,
    EventType.MODEL_VERSION_TRANSITIONED_STAGE,
    EventType.MODEL_VERSION_TAG_SET,
    EventType.MODEL_VERSION_ALIAS_CREATED,
)
REQUESTS_PER_PAGE = 20
BATCH = 5000
TOKEN = secrets.token_urlsafe(24)
DAY = 86400.0


def console_pages(states: States, size: int) -> dict[str, Any]:
    """Seed the log, serve it, time each page; the figures by page name."""
    tag = "console"
    store = states.store(tag)
    try:
        started = time.monotonic()
        ids = seed_log(store, size, random.Random(size))
        seeded = time.monotonic() - started
    finally:
        store.close()
    say(f"(j) seeded {size:,} deliveries on {states.name} in {seeded:.1f}s")
    port = free_port()
    config = _config(states.workdir / f"console-{states.name}.toml", states.path(tag), port)
    env = {**states.env(tag), "BENCH_CONSOLE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "console", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base, proc), 60, "the console")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        pages = _pages(ids)
        timings = {name: _time(session, base + path) for name, path in pages.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    listing = [name for name, path in pages.items() if path.split("?")[0] == "/deliveries"]
    worst = max(timings[name]["p95_ms"] for name in listing)
    return {
        "rows": size,
        "seed_s": round(seeded, 1),
        "pages": timings,
        "worst_p95_ms": worst,
        "judged": listing,
        "target_ms": TARGETS["console_page_ms"],
    }


def seed_log(store: Store, size: int, rng: random.Random) -> list[str]:
    """``size`` deliveries of ``size`` events over the last week: 95% delivered after one
    attempt, 3% dead after three, 2% pending after one failed attempt. The delivery ids, in
    the order they were queued."""
    now = time.time()
    ids: list[str] = []
    for start in range(0, size, BATCH):
        events, deliveries = [], []
        for i in range(start, min(size, start + BATCH)):
            event = _event(i, rng)
            webhook = WEBHOOKS[i % len(WEBHOOKS)]
            events.append(event)
            deliveries.append(
                NewDelivery(
                    make_delivery_id(event.event_id, webhook),
                    event.event_id,
                    webhook,
                    event.model_name,
                )
            )
        at = now - 7 * DAY * (1 - start / size)
        store.commit_cycle(SnapshotDelta(), events, deliveries, {}, now=at)
        _settle(store, deliveries, at, rng)
        ids.extend(d.delivery_id for d in deliveries)
    return ids


def _event(i: int, rng: random.Random) -> Event:
    base = example_event(TYPES[i % len(TYPES)], model_name=f"model-{rng.randrange(MODELS):04d}")
    return Event(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "model_version": str(1 + i // MODELS),
        }
    )


def _settle(store: Store, deliveries: list[NewDelivery], at: float, rng: random.Random) -> None:
    """Attempts and final statuses for a batch, written in one transaction (the benchmark's
    seeding, not the deliverer's path)."""
    attempts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for d in deliveries:
        roll = rng.random()
        if roll < 0.95:
            status, codes = "delivered", [200]
        elif roll < 0.98:
            status, codes = "dead", [502, 502, 404]
        else:
            status, codes = "pending", [503]
        for n, code in enumerate(codes):
            latency = rng.lognormvariate(3.5, 0.6)
            error = None if code < 300 else f"HTTP {code}: upstream said no"
            attempts.append((d.delivery_id, at + n, code, error, latency, "ok", None))
        last = at + len(codes) - 1
        updates.append(
            (
                status,
                len(codes),
                last,
                codes[-1],
                None if codes[-1] < 300 else f"HTTP {codes[-1]}: upstream said no",
                last if status == "delivered" else None,
                last if status == "dead" else None,
                d.delivery_id,
            )
        )
    with store.backend.transaction() as tx:
        tx.executemany(
            "INSERT INTO attempts (delivery_id, attempted_at, status_code, error, latency_ms,"
            " response, epoch) VALUES (?, ?, ?, ?, ?, ?, ?)",
            attempts,
        )
        tx.executemany(
            "UPDATE deliveries SET status = ?, attempts = ?, updated_at = ?,"
            " last_status_code = ?, last_error = ?, delivered_at = ?, dead_at = ?"
            " WHERE delivery_id = ?",
            updates,
        )


def _pages(ids: list[str]) -> dict[str, str]:
    middle = ids[len(ids) // 2]
    return {
        "overview": "/",
        "deliveries": "/deliveries",
        "by_webhook": "/deliveries?webhook=gitlab",
        "by_model": "/deliveries?model=model-0042",
        "dead": "/deliveries?status=dead",
        "by_event_type": "/deliveries?event=MODEL_VERSION_ALIAS_CREATED",
        "webhook_and_dead": "/deliveries?webhook=slack&status=dead",
        "no_match": "/deliveries?model=no-such-model",
        # Row ids count from 1 in a fresh state: the page below the middle of the log.
        "deep_page": f"/deliveries?before={len(ids) // 2}",
        "one_delivery": f"/deliveries/{middle}",
        "model_events": "/events?model=model-0042",
    }


def _time(session: requests.Session, url: str) -> dict[str, float]:
    """Median, p95 and worst of REQUESTS_PER_PAGE fetches (after one warm-up fetch)."""
    _fetch(session, url)
    times = [_fetch(session, url) for _ in range(REQUESTS_PER_PAGE)]
    return {
        "median_ms": round(percentile(times, 0.5), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


def _fetch(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    answer = session.get(url, timeout=30)
    if answer.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {answer.status_code}: {answer.text[:200]}")
    return (time.perf_counter() - started) * 1000


def _up(base: str, proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the console exited: {proc.stderr.read() if proc.stderr else ''}")
    try:
        return requests.get(base + "/login", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _config(path: Path, state: Path, port: int) -> Path:
    hooks = "".join(
        f'\n[[webhooks]]\nname = "{name}"\nurl = "http://127.0.0.1:9/{name}"\n' for name in WEBHOOKS
    )
    path.write_text(
        '[mlflow]\ntracking_uri = "http://127.0.0.1:9"\n'
        f'[state]\npath = "{state}"\n[log]\nformat = "json"\n'
        f'[console]\nlisten = "127.0.0.1:{port}"\ntoken_env = "BENCH_CONSOLE_TOKEN"\n' + hooks
    )
    return path
