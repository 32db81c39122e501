"""What the delivery console reads from the state and the test delivery it queues, on every
backend: pages of deliveries (filters, keyset pagination, the indexes they read along), the
overview's figures and chart, one delivery in full, the event log, and migration 4."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.harness import Receiver
from tests.helpers import RecordingLog
from tests.pg import PgDatabase
from tests.store_helpers import NOW, deliveries_for, event, file_schema, queue
from watcher.config import Config, Secret, WebhookConfig
from watcher.deliver import REDACTED, Deliverer
from watcher.model import Event, EventType, make_event_id
from watcher.status import status_report
from watcher.store import (
    _MIGRATIONS,
    DEAD,
    DELIVERED,
    PENDING,
    SCHEMA_VERSION,
    Attempt,
    AttemptRow,
    ChartBucket,
    DeliveryFilter,
    DeliveryRow,
    PgSettings,
    Store,
)
from watcher.store.console import percentile
from watcher.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION

HOUR = 3600.0
DAY = 24 * HOUR


@pytest.fixture
def store(any_store: Store) -> Store:
    """Each test on every backend: SQLite, PostgreSQL and PostgreSQL through PgBouncer."""
    return any_store


def created(model: str, version: str | None, ts: int = 1) -> Event:
    """A version created (or, without a version, a model registered)."""
    kind = EventType.MODEL_VERSION_CREATED if version else EventType.REGISTERED_MODEL_CREATED
    return Event(
        event_id=make_event_id("reg", kind, model, version, 1, None, None, ts),
        type=kind,
        model_name=model,
        timestamp=ts,
        model_version=version,
    )


def settle(
    store: Store,
    delivery_id: str,
    status: str,
    at: float,
    code: int | None,
    latency: float = 1.0,
    error: str | None = None,
    request: str | None = None,
) -> None:
    if error is None and not (code is not None and 200 <= code < 300):
        error = f"HTTP {code}"
    store.record_attempt(
        Attempt(delivery_id, at, code, error, latency, response=f"answer {code}", request=request),
        status=status,
        next_attempt_at=at + 60 if status == PENDING else None,
    )


def outbox(store: Store) -> list[DeliveryRow]:
    """Every row of the outbox, newest (highest id) first."""
    return sorted(store.list_deliveries(), key=lambda r: -r.row_id)


@pytest.fixture
def log(store: Store) -> Store:
    """30 deliveries: three models (one only by case apart), two webhooks, two event types,
    queued in three cycles an hour apart, some delivered, some dead."""
    for cycle in range(3):
        events = [
            created(model, str(cycle + 1)) if i % 2 else event(model, str(cycle + 1), ts=cycle)
            for i, model in enumerate(("fraud", "churn", "Fraud", "fraud", "churn"))
        ]
        queue(store, events, deliveries_for(events, "a", "b"), now=NOW + cycle * HOUR)
    for i, row in enumerate(outbox(store)):
        if i % 3 == 1:
            settle(store, row.delivery_id, DELIVERED, NOW + 5 * HOUR, 200)
        elif i % 5 == 2:
            settle(store, row.delivery_id, DEAD, NOW + 5 * HOUR, 404)
    return store


def matches(row: DeliveryRow, f: DeliveryFilter) -> bool:
    return (
        (f.webhook is None or row.webhook == f.webhook)
        and (f.model is None or row.model_name == f.model)
        and (f.status is None or row.status == f.status)
        and (f.event_type is None or row.event_type == f.event_type)
        and (f.since is None or row.created_at >= f.since)
        and (f.until is None or row.created_at < f.until)
    )


FILTERS = [
    DeliveryFilter(),
    DeliveryFilter(webhook="a"),
    DeliveryFilter(model="fraud"),
    DeliveryFilter(model="Fraud"),
    DeliveryFilter(status=DELIVERED),
    DeliveryFilter(status=DEAD),
    DeliveryFilter(event_type=EventType.MODEL_VERSION_CREATED.value),
    DeliveryFilter(webhook="b", status=PENDING),
    DeliveryFilter(webhook="a", model="churn", event_type=EventType.MODEL_VERSION_CREATED.value),
    DeliveryFilter(since=NOW + HOUR),
    DeliveryFilter(until=NOW + HOUR),
    DeliveryFilter(since=NOW + HOUR, until=NOW + 2 * HOUR, webhook="b"),
    DeliveryFilter(webhook="nobody"),
]


# --------------------------------------------------------------------------- delivery_page


@pytest.mark.parametrize("f", FILTERS, ids=repr)
def test_a_page_holds_the_matching_rows_newest_first(log: Store, f: DeliveryFilter) -> None:
    rows, after = log.delivery_page(f, limit=1000)
    assert after is None
    assert rows == [r for r in outbox(log) if matches(r, f)]
    assert all(r.row_id > 0 for r in rows)


def test_the_filters_narrow_the_outbox(log: Store) -> None:
    every = outbox(log)
    assert len(every) == 30
    for f in FILTERS[1:-1]:
        assert 0 < len(log.delivery_page(f, limit=1000)[0]) < len(every), f
    assert log.delivery_page(FILTERS[-1])[0] == []


@pytest.mark.parametrize("limit", [1, 4, 7, 30])
@pytest.mark.parametrize("f", [*FILTERS[:3], FILTERS[7]], ids=repr)
def test_pages_cover_every_row_once(log: Store, f: DeliveryFilter, limit: int) -> None:
    seen: list[DeliveryRow] = []
    before: int | None = None
    pages = 0
    while True:
        page, before = log.delivery_page(f, before=before, limit=limit)
        assert len(page) <= limit
        assert page or not seen, "only a first page may be empty"
        seen.extend(page)
        pages += 1
        if before is None:
            break
        assert before == page[-1].row_id
    expected = [r for r in outbox(log) if matches(r, f)]
    assert [r.delivery_id for r in seen] == [r.delivery_id for r in expected]
    assert pages == max(1, math.ceil(len(expected) / limit))


def test_rows_queued_after_the_first_page_do_not_shift_the_next(log: Store) -> None:
    first, before = log.delivery_page(DeliveryFilter(), limit=10)
    later = event("fraud", "9")
    queue(log, [later], deliveries_for([later], "a"), now=NOW + 9 * HOUR)
    second, _ = log.delivery_page(DeliveryFilter(), before=before, limit=10)
    assert second == outbox(log)[11:21]
    assert not {r.delivery_id for r in first} & {r.delivery_id for r in second}


# --------------------------------------------------------------------------- indexes


PLANNED = [
    (DeliveryFilter(), None, None),
    (DeliveryFilter(webhook="a"), 40, "deliveries_webhook"),
    (DeliveryFilter(model="fraud"), 40, "deliveries_model"),
    (DeliveryFilter(status=DEAD), None, "deliveries_status"),
    (DeliveryFilter(webhook="a", status=DEAD), 40, None),
    (DeliveryFilter(webhook="a", model="fraud", status=PENDING), None, None),
]


def page_sql(store: Store, f: DeliveryFilter, before: int | None) -> tuple[str, tuple[Any, ...]]:
    """The statement delivery_page runs, caught on its way to the backend."""
    caught: list[tuple[str, tuple[Any, ...]]] = []
    query = store.backend.query

    def catching(sql: str, params: Any = ()) -> Any:
        caught.append((sql, tuple(params)))
        return query(sql, params)

    store.backend.query = catching  # type: ignore[method-assign]
    try:
        store.delivery_page(f, before=before)
    finally:
        del store.backend.query
    (statement,) = caught
    return statement


def plan(store: Store, sql: str, params: tuple[Any, ...]) -> str:
    """The plan of one statement. PostgreSQL is told to avoid a sequential scan: on a table
    this small it would rightly prefer one, and the question is whether an index serves."""
    if store.backend.kind == "sqlite":
        rows = store.backend.query(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(r["detail"]) for r in rows)
    with store.backend.transaction() as tx:
        tx.execute("SET LOCAL enable_seqscan = off")
        return "\n".join(str(r[0]) for r in tx.execute(f"EXPLAIN {sql}", params).fetchall())


@pytest.mark.parametrize(("f", "before", "index"), PLANNED, ids=repr)
def test_pages_are_read_along_an_index_without_sorting(
    log: Store, f: DeliveryFilter, before: int | None, index: str | None
) -> None:
    text = plan(log, *page_sql(log, f, before))
    if log.backend.kind == "sqlite":
        assert "TEMP B-TREE" not in text, text
        assert "SCAN d" not in text or f == DeliveryFilter(), text
    else:
        assert "Sort" not in text.split("SubPlan")[0], text
        assert "Seq Scan on deliveries" not in text, text
    if index is not None:
        assert index in text, text


# --------------------------------------------------------------------------- overview


@pytest.fixture
def busy(store: Store) -> tuple[Store, float]:
    """Two webhooks' attempts over the last days, as of ``now``."""
    now = NOW + 10 * DAY
    events = [event("fraud", str(v)) for v in range(1, 5)] + [event("churn", "1")]
    a = deliveries_for(events[:4], "a")
    b = deliveries_for(events[:3], "b")
    queue(store, events, a + b, now=now - 4 * DAY)
    d1, d2, d3, _ = (r.delivery_id for r in a)
    e1, e2, e3 = (r.delivery_id for r in b)
    # in the order they happened, as the log records them
    settle(store, d3, DEAD, now - 3 * DAY, 404, latency=5)
    settle(store, e1, DELIVERED, now - 2 * DAY, 200, latency=7)
    settle(store, d2, PENDING, now - 5 * HOUR, 500, latency=30)
    settle(store, d2, DELIVERED, now - 2 * HOUR, 201, latency=20)
    settle(store, e2, PENDING, now - 40 * 60, None, latency=3000, error="connection reset")
    settle(store, d1, DELIVERED, now - 0.5 * HOUR, 200, latency=10)
    settle(store, e3, DEAD, now - 30 * 60, 410, latency=50)
    settle(store, e2, DELIVERED, now - 20 * 60, 204, latency=40)
    return store, now


def test_webhook_stats_count_the_last_hour_and_day(busy: tuple[Store, float]) -> None:
    store, now = busy
    a, b = store.webhook_stats(now)
    assert (a.webhook, b.webhook) == ("a", "b")
    assert (a.delivered_hour, a.delivered_day, a.attempts_day) == (1, 2, 3)
    assert a.success_rate == pytest.approx(2 / 3)
    assert a.p50_ms == 20.0
    assert a.p95_ms == pytest.approx(29.0)
    assert (a.last_error, a.last_error_at) == ("HTTP 500", now - 5 * HOUR)
    assert (b.delivered_hour, b.delivered_day, b.attempts_day) == (1, 1, 3)
    assert b.success_rate == pytest.approx(1 / 3)
    assert b.p50_ms == 50.0
    assert b.p95_ms == pytest.approx(50 + 2950 * 0.9)
    assert (b.last_error, b.last_error_at) == ("HTTP 410", now - 30 * 60)


def test_webhook_stats_count_the_outbox_as_status_does(busy: tuple[Store, float]) -> None:
    store, now = busy
    report = status_report(Config(), store, now)["deliveries"]
    stats = {s.webhook: s for s in store.webhook_stats(now)}
    assert stats.keys() == report.keys()
    for name, counts in report.items():
        shown = stats[name]
        assert {PENDING: shown.pending, DEAD: shown.dead, DELIVERED: shown.delivered} == counts
    assert (stats["a"].pending, stats["a"].dead, stats["a"].delivered) == (1, 1, 2)


def test_a_webhook_without_recent_attempts_has_no_rate_or_latency(store: Store) -> None:
    events = [event("fraud", "1"), event("fraud", "2")]
    rows = deliveries_for(events, "quiet")
    queue(store, events, rows, now=NOW)
    settle(store, rows[0].delivery_id, DEAD, NOW + 1, 404)
    (stats,) = store.webhook_stats(NOW + 3 * DAY)
    assert (stats.attempts_day, stats.success_rate, stats.p50_ms, stats.p95_ms) == (
        0,
        None,
        None,
        None,
    )
    assert (stats.pending, stats.dead, stats.delivered) == (1, 1, 0)
    assert (stats.last_error, stats.last_error_at) == ("HTTP 404", NOW + 1)


def test_no_outbox_no_stats(store: Store) -> None:
    assert store.webhook_stats(NOW) == []


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([], 50, None), ([5.0], 95, 5.0), ([1.0, 2.0], 50, 1.5), ([1.0, 2.0, 3.0, 4.0], 95, 3.85)],
)
def test_percentiles_interpolate_between_ranks(
    values: list[float], p: float, expected: float | None
) -> None:
    assert percentile(values, p) == (None if expected is None else pytest.approx(expected))


def test_the_chart_has_one_bucket_per_hour_with_each_outcome(busy: tuple[Store, float]) -> None:
    store, now = busy
    chart = store.delivery_chart(now)
    assert len(chart) == 24
    last = math.floor(now / HOUR) * HOUR
    assert [c.start for c in chart] == [last - (23 - i) * HOUR for i in range(24)]
    by_start = {c.start: c for c in chart}

    def bucket(at: float) -> ChartBucket:
        return by_start[math.floor(at / HOUR) * HOUR]

    assert bucket(now - 0.5 * HOUR).delivered >= 1
    assert sum(c.delivered for c in chart) == 3
    assert sum(c.failed for c in chart) == 3
    assert sum(c.dead for c in chart) == 1
    assert bucket(now - 5 * HOUR).failed == 1
    assert bucket(now - 2 * HOUR).delivered == 1
    assert bucket(now - 30 * 60).dead == 1
    short = store.delivery_chart(now, hours=2)
    assert [c.start for c in short] == [last - HOUR, last]


def test_an_empty_chart_still_has_its_hours(store: Store) -> None:
    chart = store.delivery_chart(NOW, hours=3)
    assert [(c.delivered, c.failed, c.dead) for c in chart] == [(0, 0, 0)] * 3


# --------------------------------------------------------------------------- one delivery


def test_a_delivery_in_full(store: Store) -> None:
    ev = event("fraud", "1")
    (row,) = deliveries_for([ev], "a")
    queue(store, [ev], [row])
    detail = store.delivery_detail(row.delivery_id)
    assert detail is not None
    assert (detail.row.delivery_id, detail.row.status, detail.event) == (
        row.delivery_id,
        PENDING,
        ev,
    )
    assert (detail.request, detail.attempts) == (None, [])
    sent = {"method": "POST", "url": "http://x/h", "headers": [["A", REDACTED]], "body": "{}"}
    settle(store, row.delivery_id, PENDING, NOW + 1, 503, latency=12, request=json.dumps(sent))
    settle(store, row.delivery_id, DELIVERED, NOW + 70, 200, latency=8)
    detail = store.delivery_detail(row.delivery_id)
    assert detail is not None
    assert detail.request == sent, "an attempt that sent nothing keeps the last request"
    assert detail.attempts == [
        AttemptRow(NOW + 1, 503, "HTTP 503", 12.0, "answer 503", None),
        AttemptRow(NOW + 70, 200, None, 8.0, "answer 200", None),
    ]
    assert (detail.row.status, detail.row.total_attempts) == (DELIVERED, 2)
    assert detail.row.row_id > 0


def test_only_a_full_id_finds_a_delivery(store: Store) -> None:
    ev = event("fraud", "1")
    (row,) = deliveries_for([ev], "a")
    queue(store, [ev], [row])
    assert store.delivery_detail(row.delivery_id[:12]) is None
    assert store.delivery_detail("no-such-id") is None


# --------------------------------------------------------------------------- events


@pytest.fixture
def history(store: Store) -> tuple[Store, list[Event]]:
    """fraud v1 created, to Staging, to Production (three cycles); fraud v2 and churn v1 and
    fraud's own registration beside it."""
    fraud = [created("fraud", "1"), event("fraud", "1", "Staging"), event("fraud", "1")]
    others = [created("fraud", "2"), created("churn", "1"), created("fraud", None)]
    for i, ev in enumerate(fraud):
        queue(store, [ev, others[i]], deliveries_for([ev, others[i]], "a", "b"), NOW + i * HOUR)
    first = deliveries_for(fraud[:1], "a", "b")
    settle(store, first[0].delivery_id, DELIVERED, NOW + 1, 200)
    settle(store, first[1].delivery_id, DEAD, NOW + 1, 404)
    return store, fraud + others


def test_a_version_timeline_is_its_events_oldest_first(history: tuple[Store, list[Event]]) -> None:
    store, events = history
    timeline = store.version_timeline("fraud", "1")
    assert [e.event_id for e in timeline] == [e.event_id for e in events[:3]]
    assert [e.detected_at for e in timeline] == [NOW, NOW + HOUR, NOW + 2 * HOUR]
    assert timeline[0].deliveries == {DELIVERED: 1, DEAD: 1}
    assert timeline[1].deliveries == {PENDING: 2}
    assert timeline[2].data == events[2].to_dict()
    assert (timeline[2].type, timeline[2].model_version) == (events[2].type.value, "1")
    (model_event,) = store.version_timeline("fraud", None)
    assert model_event.event_id == events[5].event_id
    assert store.version_timeline("fraud", "7") == []


def test_model_events_newest_first_by_model_and_time(history: tuple[Store, list[Event]]) -> None:
    store, events = history
    fraud = store.model_events("fraud")
    assert [e.model_name for e in fraud] == ["fraud"] * 5
    assert [e.detected_at for e in fraud] == sorted((e.detected_at for e in fraud), reverse=True)
    assert fraud[0].event_id in {events[2].event_id, events[5].event_id}
    every = store.model_events(None)
    assert len(every) == 6
    assert {e.model_name for e in every} == {"fraud", "churn"}
    assert [e.detected_at for e in store.model_events(None, since=NOW + HOUR)] == [
        NOW + 2 * HOUR,
        NOW + 2 * HOUR,
        NOW + HOUR,
        NOW + HOUR,
    ]
    assert {e.detected_at for e in store.model_events(None, before=NOW + HOUR)} == {NOW}
    assert len(store.model_events("fraud", limit=2)) == 2
    assert store.model_events("churn")[0].deliveries == {PENDING: 2}
    assert store.model_events("nobody") == []


def test_model_names_by_prefix(store: Store) -> None:
    events = [created(m, "1") for m in ("fraud", "fraud-2", "Fraud", "churn", "fr%ud", "fr_x")]
    events.append(created("fraud", "2"))
    queue(store, events, [])
    assert store.model_names() == sorted(["Fraud", "churn", "fr%ud", "fr_x", "fraud", "fraud-2"])
    assert store.model_names("fr") == ["fr%ud", "fr_x", "fraud", "fraud-2"]
    assert store.model_names("fr%") == ["fr%ud"]
    assert store.model_names("fr_") == ["fr_x"]
    assert store.model_names("F") == ["Fraud"]
    assert store.model_names("fr", limit=1) == ["fr%ud"]
    assert store.model_names("zz") == []


# --------------------------------------------------------------------------- test delivery


def test_a_queued_test_delivery_is_sent_by_the_deliverer(store: Store, receiver: Receiver) -> None:
    webhook = WebhookConfig(
        name="deploy",
        url=receiver.url,
        secret=Secret("signing-secret-123", "test"),
        signature="mlflow",
        headers=(("X-Api-Key", Secret("api-key-456", "test")),),
    )
    test_event = created("fraud", "1", ts=42)
    store.queue_test_delivery(test_event, "deploy", "test-delivery-1", NOW)
    store.queue_test_delivery(test_event, "deploy", "test-delivery-2", NOW + 1)
    (first, second), _ = store.delivery_page(DeliveryFilter(webhook="deploy"))
    assert (first.delivery_id, second.delivery_id) == ("test-delivery-2", "test-delivery-1")
    assert first.status == PENDING
    assert first.next_attempt_at == NOW + 1
    assert store.model_events("fraud")[0].deliveries == {PENDING: 2}

    deliverer = Deliverer(store, Config(webhooks=(webhook,)), RecordingLog(), clock=lambda: NOW + 2)
    try:
        report = deliverer.drain()
    finally:
        deliverer.close()
    assert report.delivered == 2
    sent = sorted(d.headers["X-MLflow-Delivery-Id"] for d in receiver.deliveries())
    assert sent == ["test-delivery-1", "test-delivery-2"]
    detail = store.delivery_detail("test-delivery-1")
    assert detail is not None
    assert detail.row.status == DELIVERED
    assert detail.event == test_event
    assert [a.status_code for a in detail.attempts] == [200]
    assert detail.request is not None
    headers = dict(detail.request["headers"])
    assert headers["X-Api-Key"] == REDACTED
    assert headers["X-MLflow-Delivery-Id"] == "test-delivery-1"
    assert headers["X-MLflow-Signature"].startswith("v1,")
    assert detail.request["url"] == receiver.url
    assert json.loads(detail.request["body"])["model_name"] == "fraud"
    text = json.dumps(detail.request)
    assert "api-key-456" not in text
    assert "signing-secret-123" not in text


# --------------------------------------------------------------------------- migrations


@pytest.fixture
def version_3_file(tmp_path: Path) -> Path:
    """A state file as the watcher before the console left it: schema 3, one delivery tried."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for script in _MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    ev = event("fraud", "1")
    conn.execute(
        "INSERT INTO events (event_id, type, model_name, model_version, data, detected_at)"
        " VALUES (?, ?, 'fraud', '1', ?, ?)",
        (ev.event_id, ev.type.value, json.dumps(ev.to_dict()), NOW),
    )
    conn.execute(
        "INSERT INTO deliveries (delivery_id, event_id, webhook, model_name, status, attempts,"
        " created_at, next_attempt_at, updated_at, last_status_code, delivered_at)"
        " VALUES ('d-1', ?, 'a', 'fraud', 'delivered', 1, ?, ?, ?, 200, ?)",
        (ev.event_id, NOW, NOW, NOW + 5, NOW + 5),
    )
    conn.execute(
        "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, response)"
        " VALUES ('d-1', ?, 200, 3.0, 'ok')",
        (NOW + 5,),
    )
    conn.commit()
    conn.close()
    return path


def test_a_version_3_file_is_migrated_and_its_rows_survive(version_3_file: Path) -> None:
    with Store.open(version_3_file) as store:
        (row,), after = store.delivery_page(DeliveryFilter(webhook="a"))
        detail = store.delivery_detail("d-1")
        stats = store.webhook_stats(NOW + 60)
    assert after is None
    assert (row.delivery_id, row.status, row.delivered_at, row.row_id) == (
        "d-1",
        DELIVERED,
        NOW + 5,
        1,
    )
    assert detail is not None
    assert detail.request is None, "rows tried before the console have no request"
    assert detail.attempts == [AttemptRow(NOW + 5, 200, None, 3.0, "ok", None)]
    assert (stats[0].delivered, stats[0].delivered_hour, stats[0].p50_ms) == (1, 1, 3.0)
    version, columns, indexes = file_schema(version_3_file, "deliveries")
    assert version == SCHEMA_VERSION == 4
    assert "request" in columns
    assert {
        "deliveries_webhook",
        "deliveries_model",
        "deliveries_status",
        "events_model",
        "attempts_time",
        "attempts_failed",
    } <= indexes


def test_a_postgresql_state_of_schema_1_is_migrated_and_its_rows_survive(pg_db: PgDatabase) -> None:
    ev = event("fraud", "1")
    with psycopg.connect(pg_db.url_with_password, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "old"')
        conn.execute('SET search_path TO "old"')
        for statement in PG_MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            "INSERT INTO events (event_id, type, model_name, model_version, data, detected_at)"
            " VALUES (%s, %s, 'fraud', '1', %s, %s)",
            (ev.event_id, ev.type.value, json.dumps(ev.to_dict()), NOW),
        )
        conn.execute(
            "INSERT INTO deliveries (delivery_id, event_id, webhook, model_name, status,"
            " created_at, next_attempt_at, updated_at) VALUES ('d-1', %s, 'a', 'fraud',"
            " 'pending', %s, %s, %s)",
            (ev.event_id, NOW, NOW, NOW),
        )
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace="old")
    with Store.connect(settings) as store:
        (row,), _ = store.delivery_page(DeliveryFilter(model="fraud"))
        assert (row.delivery_id, row.status) == ("d-1", PENDING)
        settle(store, "d-1", DELIVERED, NOW + 1, 200, request='{"method": "POST"}')
        detail = store.delivery_detail("d-1")
        assert detail is not None
        assert detail.request == {"method": "POST"}
        version = store.backend.query("SELECT version FROM schema_version")[0]["version"]
        indexes = {
            str(r["indexname"])
            for r in store.backend.query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'old'"
            )
        }
    assert version == PG_SCHEMA_VERSION == 2
    assert {"deliveries_webhook", "deliveries_model", "events_model", "attempts_failed"} <= indexes
