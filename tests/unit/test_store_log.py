"""The delivery log in the state file: migration 2, listing, redelivery, purge and pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.store_helpers import (
    attempts,
    deliveries_for,
    due_deliveries,
    event,
    file_schema,
    queue,
)
from watcher.errors import StoreError
from watcher.model import Event, SnapshotDelta
from watcher.store import (
    _MIGRATIONS,
    DEAD,
    DELIVERED,
    PENDING,
    SCHEMA_VERSION,
    Attempt,
    NewDelivery,
    Store,
)

NOW = 1_700_000_000.0
DAY = 86_400.0


@pytest.fixture
def store(any_store: Store) -> Store:
    """Each test on both backends: SQLite and PostgreSQL."""
    return any_store


def settle(store: Store, delivery_id: str, status: str, at: float, code: int | None) -> None:
    error = None if status == DELIVERED else f"HTTP {code}"
    store.record_attempt(
        Attempt(delivery_id, at, code, error, 1.0, response="answer"),
        status=status,
        next_attempt_at=at + 60 if status == PENDING else None,
    )


def one_of_each(store: Store) -> tuple[str, str, str]:
    """Deliveries to webhook "a": delivered (fraud v1), dead (fraud v2), pending (churn v1)."""
    events = [event("fraud", "1"), event("fraud", "2"), event("churn", "1")]
    rows = deliveries_for(events, "a")
    queue(store, events, rows)
    delivered, dead, pending = (d.delivery_id for d in rows)
    settle(store, delivered, DELIVERED, NOW + 1, 200)
    settle(store, dead, DEAD, NOW + 2, 404)
    return delivered, dead, pending


def ids_of(store: Store, **filters: Any) -> list[str]:
    return [r.delivery_id for r in store.list_deliveries(**filters)]


# --------------------------------------------------------------------------- migration 2


def test_a_version_1_database_is_migrated_and_its_rows_survive(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO events (event_id, type, model_name, model_version, data, detected_at)"
        " VALUES ('e1', 'MODEL_VERSION_CREATED', 'fraud', '1', ?, ?)",
        (
            '{"event_id": "e1", "type": "MODEL_VERSION_CREATED", "model_name": "fraud",'
            ' "timestamp": 5, "model_version": "1"}',
            NOW,
        ),
    )
    for delivery_id, status in (("d-delivered", DELIVERED), ("d-dead", DEAD)):
        conn.execute(
            "INSERT INTO deliveries (delivery_id, event_id, webhook, model_name, status,"
            " attempts, created_at, next_attempt_at, updated_at, last_status_code)"
            " VALUES (?, 'e1', 'a', 'fraud', ?, 1, ?, ?, ?, 200)",
            (delivery_id, status, NOW, NOW, NOW + 5),
        )
    conn.execute(
        "INSERT INTO attempts (delivery_id, attempted_at, status_code, error, latency_ms)"
        " VALUES ('d-delivered', ?, 200, NULL, 3.0)",
        (NOW + 5,),
    )
    conn.commit()
    conn.close()

    with Store.open(path) as store:
        delivered, dead = store.list_deliveries()
        assert attempts(store, "d-delivered") == [Attempt("d-delivered", NOW + 5, 200, None, 3.0)]
    assert (delivered.delivery_id, delivered.status) == ("d-delivered", DELIVERED)
    assert delivered.delivered_at == NOW + 5, "settled rows get their time from updated_at"
    assert delivered.dead_at is None
    assert delivered.total_attempts == 1
    assert delivered.event_type == "MODEL_VERSION_CREATED"
    assert dead.dead_at == NOW + 5
    version, columns, indexes = file_schema(path, "attempts")
    assert version == SCHEMA_VERSION == 4
    assert "response" in columns
    assert {"deliveries_dead_at", "deliveries_delivered_at", "deliveries_updated"} <= indexes


def test_attempts_keep_the_response_and_settling_times(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    assert attempts(store, delivered) == [
        Attempt(delivered, NOW + 1, 200, None, 1.0, response="answer")
    ]
    rows = {r.delivery_id: r for r in store.list_deliveries()}
    assert (rows[delivered].delivered_at, rows[delivered].dead_at) == (NOW + 1, None)
    assert (rows[dead].delivered_at, rows[dead].dead_at) == (None, NOW + 2)
    assert (rows[pending].delivered_at, rows[pending].dead_at) == (None, None)
    assert rows[dead].last_response == "answer"
    assert rows[dead].last_error == "HTTP 404"
    assert rows[pending].last_response is None
    assert rows[pending].updated_at == NOW
    assert rows[pending].detected_at == NOW


def test_an_attempt_without_a_response_still_records(store: Store) -> None:
    events = [event("fraud", "1")]
    (row,) = deliveries_for(events, "a")
    queue(store, events, [row])
    store.record_attempt(Attempt(row.delivery_id, NOW, None, "timed out", 1.0), status=PENDING)
    (attempt,) = attempts(store, row.delivery_id)
    assert attempt.response is None


# --------------------------------------------------------------------------- listing


def test_list_filters_by_status_webhook_model_and_since(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    other = event("fraud", "3")
    (elsewhere,) = deliveries_for([other], "b")
    store.commit_cycle(SnapshotDelta(), [other], [elsewhere], {}, now=NOW + 100)

    assert ids_of(store) == [delivered, dead, pending, elsewhere.delivery_id]
    assert ids_of(store, status=DEAD) == [dead]
    assert ids_of(store, status=PENDING) == [pending, elsewhere.delivery_id]
    assert ids_of(store, webhook="b") == [elsewhere.delivery_id]
    assert ids_of(store, model="fraud") == [delivered, dead, elsewhere.delivery_id]
    assert ids_of(store, model="fraud", webhook="a", status=DELIVERED) == [delivered]
    assert ids_of(store, since=NOW + 2) == [dead, elsewhere.delivery_id], "updated or created"
    assert ids_of(store, since=NOW + 100) == [elsewhere.delivery_id]
    assert ids_of(store, since=NOW + 101) == []
    assert ids_of(store, webhook="nope") == []


def test_list_limit_keeps_the_newest_and_lists_them_newest_last(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    assert ids_of(store, limit=2) == [dead, pending]
    assert ids_of(store, limit=1, status=DELIVERED) == [delivered]
    assert len(store.list_deliveries(limit=10)) == 3


# --------------------------------------------------------------------------- redelivery


def test_redeliver_dead_requeues_under_the_same_id_and_restarts_the_policy(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    assert store.redeliver(dead=True, now=NOW + DAY) == 1
    rows = {r.delivery_id: r for r in store.list_deliveries()}
    row = rows[dead]
    assert row.status == PENDING
    assert row.next_attempt_at == row.created_at == row.updated_at == NOW + DAY
    assert row.attempts == 0, "max_attempts counts afresh"
    assert row.total_attempts == 1, "earlier attempts stay in the log"
    assert row.dead_at is None
    assert row.event_id == event("fraud", "2").event_id
    assert len(attempts(store, dead)) == 1
    assert rows[delivered].status == DELIVERED, "--dead leaves delivered rows alone"
    assert rows[pending].next_attempt_at == NOW

    heads = due_deliveries(store, NOW + DAY)
    assert {h.delivery_id for h in heads} == {dead, pending}
    requeued = next(h for h in heads if h.delivery_id == dead)
    assert requeued.attempts == 0
    assert requeued.created_at == NOW + DAY


def test_redeliver_by_id_or_prefix_takes_delivered_rows_too(store: Store) -> None:
    delivered, dead, _ = one_of_each(store)
    assert store.redeliver([delivered[:8]], now=NOW + 10) == 1
    (row,) = [r for r in store.list_deliveries() if r.delivery_id == delivered]
    assert (row.status, row.delivered_at, row.created_at) == (PENDING, None, NOW + 10)
    assert store.redeliver([dead.upper()], now=NOW + 11) == 1, "full ids, any case"
    assert store.list_deliveries(status=DEAD) == []


def test_redeliver_since_takes_recent_rows_of_any_status(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    assert store.redeliver(since=NOW + 1, now=NOW + 50) == 2
    assert {r.delivery_id for r in store.list_deliveries(status=PENDING)} == {
        delivered,
        dead,
        pending,
    }
    assert {r.delivery_id for r in store.list_deliveries(since=NOW + 50)} == {delivered, dead}


def test_redeliver_selectors_narrow_each_other(store: Store) -> None:
    delivered, dead, _ = one_of_each(store)
    assert store.redeliver(webhook="b", now=NOW + 5) == 0
    assert store.redeliver([delivered], dead=True, now=NOW + 5) == 0, "delivered is not dead"
    assert store.redeliver(dead=True, since=NOW + 3, now=NOW + 5) == 0
    assert store.redeliver(webhook="a", now=NOW + 5) == 1, "a webhook alone: its dead rows"
    assert [r.delivery_id for r in store.list_deliveries(status=DELIVERED)] == [delivered]
    assert store.list_deliveries(status=DEAD) == []
    assert dead in ids_of(store, status=PENDING)


def test_redeliver_names_every_unknown_short_or_ambiguous_id(store: Store) -> None:
    delivered, _, _ = one_of_each(store)
    with pytest.raises(StoreError) as raised:
        store.redeliver([delivered, "00000000-dead", "beef"], now=NOW + 5)
    message = str(raised.value)
    assert "00000000-dead" in message
    assert "beef" in message
    assert delivered not in message
    assert ids_of(store, status=DELIVERED) == [delivered], "nothing changes on an error"

    events = [event("m", str(n)) for n in range(3)]
    rows = [NewDelivery(f"abcdefgh-{n:04}", e.event_id, "a", "m") for n, e in enumerate(events)]
    queue(store, events, rows)
    with pytest.raises(StoreError, match="more than one delivery starts with abcdefgh"):
        store.redeliver(["abcdefgh"], now=NOW + 5)
    assert store.redeliver(["abcdefgh-0002"], now=NOW + 5) == 1


def test_redeliver_needs_a_selector(store: Store) -> None:
    with pytest.raises(ValueError, match="needs"):
        store.redeliver(now=NOW)
    with pytest.raises(ValueError, match="needs"):
        store.redeliver([], now=NOW)


# --------------------------------------------------------------------------- purge and prune


def test_purge_deletes_old_dead_rows_with_their_attempts_and_nothing_else(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    assert store.purge(older_than=DAY, now=NOW + DAY) == 0, "dead for less than a day"
    assert store.purge(older_than=DAY, now=NOW + 2 + DAY + 1) == 1
    assert ids_of(store) == [delivered, pending]
    assert attempts(store, dead) == []
    assert attempts(store, delivered) != []
    assert store.purge(older_than=1, now=NOW + 10 * DAY) == 0
    assert ids_of(store) == [delivered, pending], "only dead rows are ever purged"


def test_purge_drops_the_event_only_when_no_other_delivery_needs_it(store: Store) -> None:
    shared = event("fraud", "9")
    to_a, to_b = deliveries_for([shared], "a", "b")
    queue(store, [shared], [to_a, to_b])
    settle(store, to_a.delivery_id, DEAD, NOW + 1, 410)
    assert store.purge(older_than=1, now=NOW + 100) == 1
    (left,) = store.list_deliveries()
    assert left.delivery_id == to_b.delivery_id
    assert left.event_id == shared.event_id
    assert store.recent_events() == [shared]


def test_prune_removes_old_delivered_rows_and_unreferenced_old_events(store: Store) -> None:
    delivered, dead, pending = one_of_each(store)
    unwanted = event("nobody", "1")  # detected, but no webhook wanted it
    store.commit_cycle(SnapshotDelta(), [unwanted], [], {}, now=NOW)

    assert store.prune_delivered(DAY, now=NOW + DAY) == 0, "not old enough yet"
    assert store.prune_delivered(DAY, now=NOW + 1 + DAY + 1) == 1
    assert ids_of(store) == [dead, pending]
    assert attempts(store, delivered) == []
    remaining: list[Event] = store.recent_events()
    assert event("fraud", "1") not in remaining
    assert unwanted not in remaining
    assert {e.event_id for e in remaining} == {
        event("fraud", "2").event_id,
        event("churn", "1").event_id,
    }


def test_prune_and_purge_never_touch_pending_rows(store: Store) -> None:
    events = [event("fraud", "1"), event("fraud", "2")]
    rows = deliveries_for(events, "a")
    queue(store, events, rows)
    settle(store, rows[0].delivery_id, PENDING, NOW + 1, 503)
    far = NOW + 1000 * DAY
    assert store.prune_delivered(1, now=far) == 0
    assert store.purge(older_than=1, now=far) == 0
    assert [r.status for r in store.list_deliveries()] == [PENDING, PENDING]
    assert len(attempts(store, rows[0].delivery_id)) == 1
    assert len(store.recent_events()) == 2


def test_dead_rows_are_never_pruned(store: Store) -> None:
    _, dead, _ = one_of_each(store)
    store.prune_delivered(1, now=NOW + 1000 * DAY)
    (row,) = store.list_deliveries(status=DEAD)
    assert row.delivery_id == dead
    assert len(attempts(store, dead)) == 1


def test_a_redelivered_then_delivered_row_is_pruned_from_its_new_delivery_time(
    store: Store,
) -> None:
    delivered, _, _ = one_of_each(store)
    store.redeliver([delivered], now=NOW + DAY)
    settle(store, delivered, DELIVERED, NOW + DAY + 1, 200)
    assert store.prune_delivered(DAY, now=NOW + DAY + 10) == 0
    assert store.prune_delivered(DAY, now=NOW + 2 * DAY + 2) == 1


# --------------------------------------------------------------------------- summary


def test_summary_counts_by_webhook_and_status_and_the_oldest_pending(store: Store) -> None:
    assert store.summary().counts == {}
    assert store.summary().oldest_pending is None
    one_of_each(store)
    late = event("fraud", "7")
    (to_b,) = deliveries_for([late], "b")
    store.commit_cycle(SnapshotDelta(), [late], [to_b], {}, now=NOW + 30)
    summary = store.summary()
    assert summary.counts == {"a": {DELIVERED: 1, DEAD: 1, PENDING: 1}, "b": {PENDING: 1}}
    assert summary.oldest_pending == NOW
    assert summary.oldest_pending_by_webhook == {"a": NOW, "b": NOW + 30}
    assert summary.total(PENDING) == 2
    assert summary.total(DEAD) == 1
