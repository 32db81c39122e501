"""The state database, on a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from tests.store_helpers import (
    attempts,
    deliveries,
    deliveries_for,
    due_deliveries,
    event,
    oldest_pending,
    queue,
)
from watcher.detect import snapshot_delta
from watcher.errors import LockError, StoreError
from watcher.model import (
    ModelState,
    Observation,
    VersionState,
)
from watcher.store import (
    DEAD,
    DELIVERED,
    PENDING,
    SCHEMA_VERSION,
    Attempt,
    Store,
)

NOW = 1_700_000_000.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(any_store: Store) -> Store:
    """Each test on both backends: SQLite and PostgreSQL."""
    return any_store


def sample_observation() -> Observation:
    model = ModelState(
        name="fraud",
        creation_timestamp=1,
        last_updated_timestamp=5,
        tags={"team": "risk"},
        aliases={"champion": "2"},
    )
    versions = [
        VersionState("fraud", "1", 1, 3, "Archived", run_id="r1", tags={"k": "v"}),
        VersionState("fraud", "2", 2, 5, "Production", user_id="alice", description="d"),
    ]
    return Observation(models={"fraud": model}, versions={v.key: v for v in versions}, read_at=77)


# --------------------------------------------------------------------------- opening


def test_state_file_is_created_private(db_path: Path) -> None:
    with Store.open(db_path):
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        lock_path = db_path.with_name(db_path.name + ".lock")
        assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(db_path.parent.stat().st_mode) & 0o077 == 0


def test_schema_is_migrated_to_the_current_version(db_path: Path) -> None:
    with Store.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"meta", "snapshot_models", "snapshot_versions", "events", "deliveries"} <= tables
    assert "attempts" in tables


def test_reopening_keeps_the_data_and_does_not_migrate_again(db_path: Path) -> None:
    with Store.open(db_path) as first:
        first.set_meta({"baseline_at": "1"})
    with Store.open(db_path) as second:
        assert second.get_meta("baseline_at") == "1"


def test_second_open_with_lock_raises_lock_error_until_closed(db_path: Path) -> None:
    first = Store.open(db_path)
    try:
        with pytest.raises(LockError) as info:
            Store.open(db_path)
        assert info.value.exit_code == 4
        assert isinstance(info.value, StoreError)
        assert str(db_path) in str(info.value)
    finally:
        first.close()
    with Store.open(db_path) as again:
        assert again.get_meta("anything") is None


def test_open_without_lock_does_not_take_or_respect_the_lock(db_path: Path) -> None:
    with Store.open(db_path) as locked, Store.open(db_path, lock=False) as reader:
        locked.set_meta({"k": "v"})
        assert reader.get_meta("k") == "v"


def test_newer_schema_version_raises_store_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        Store.open(db_path, lock=False)
    assert not isinstance(info.value, LockError)
    assert info.value.exit_code == 1
    assert "newer" in str(info.value)


def test_a_file_that_is_not_sqlite_raises_store_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not usable"):
        Store.open(db_path)
    # The lock is released when opening fails, so a fixed file can be opened at once.
    db_path.unlink()
    with Store.open(db_path) as store:
        assert store.load_snapshot() is None


# --------------------------------------------------------------------------- snapshot


def test_load_snapshot_is_none_before_the_baseline(store: Store) -> None:
    assert store.load_snapshot() is None


def test_load_snapshot_returns_the_committed_observation(store: Store) -> None:
    observation = sample_observation()
    store.commit_cycle(
        snapshot_delta(None, observation),
        [],
        [],
        {"baseline_at": str(NOW), "snapshot_read_at": str(observation.read_at)},
        now=NOW,
    )
    loaded = store.load_snapshot()
    assert loaded is not None
    assert dict(loaded.models) == dict(observation.models)
    assert dict(loaded.versions) == dict(observation.versions)
    assert loaded.read_at == 77


def test_commit_cycle_applies_deletes_and_updates(store: Store) -> None:
    first = sample_observation()
    store.commit_cycle(snapshot_delta(None, first), [], [], {"baseline_at": "1"}, now=NOW)
    v2 = first.versions[("fraud", "2")]
    moved = VersionState("fraud", "2", 2, 9, "Archived", user_id=v2.user_id, description="d")
    second = Observation(models={}, versions={moved.key: moved}, read_at=78)
    store.commit_cycle(snapshot_delta(first, second), [], [], {"snapshot_read_at": "78"}, now=NOW)
    loaded = store.load_snapshot()
    assert loaded is not None
    assert dict(loaded.models) == {}
    assert dict(loaded.versions) == {moved.key: moved}
    assert loaded.read_at == 78


def test_meta_roundtrip(store: Store) -> None:
    store.set_meta({"a": "1", "b": "2"})
    store.set_meta({"a": "3"})
    assert store.all_meta() == {"a": "3", "b": "2"}


# --------------------------------------------------------------------------- outbox


def test_commit_cycle_queues_each_delivery_once(store: Store) -> None:
    events = [event("fraud", "1"), event("fraud", "2")]
    new = deliveries_for(events, "deploy", "audit")
    assert queue(store, events, new) == 4
    assert queue(store, events, new) == 0
    assert len(deliveries(store)) == 4
    assert {d.status for d in deliveries(store)} == {PENDING}


def test_commit_cycle_writes_snapshot_events_and_deliveries_together(store: Store) -> None:
    observation = sample_observation()
    events = [event("fraud", "2")]
    queued = store.commit_cycle(
        snapshot_delta(None, observation),
        events,
        deliveries_for(events, "deploy"),
        {"baseline_at": "1"},
        now=NOW,
    )
    assert queued == 1
    assert store.load_snapshot() is not None
    (row,) = deliveries(store)
    assert row.event_id == events[0].event_id
    assert row.event_type == "MODEL_VERSION_TRANSITIONED_STAGE"
    assert row.model_version == "2"
    assert row.created_at == row.next_attempt_at == NOW
    assert row.attempts == 0


def test_due_deliveries_offers_only_the_head_of_each_lane(store: Store) -> None:
    fraud1, fraud2, churn1 = event("fraud", "1"), event("fraud", "2"), event("churn", "1")
    queue(store, [fraud1, fraud2, churn1], deliveries_for([fraud1, fraud2, churn1], "a", "b"))
    heads = due_deliveries(store, NOW)
    lane_heads = [
        ("a", "fraud", "1"),
        ("a", "churn", "1"),
        ("b", "fraud", "1"),
        ("b", "churn", "1"),
    ]
    assert [(d.webhook, d.event.model_name, d.event.model_version) for d in heads] == lane_heads
    assert heads[0].event == fraud1
    assert heads[0].attempts == 0
    assert heads[0].created_at == NOW

    store.record_attempt(Attempt(heads[0].delivery_id, NOW, 200, None, 5.0), status=DELIVERED)
    after = due_deliveries(store, NOW)
    # Only lane (a, fraud) moves on: to its next delivery.
    assert [(d.webhook, d.event.model_name, d.event.model_version) for d in after] == [
        ("a", "fraud", "2"),
        *lane_heads[1:],
    ]


def test_due_deliveries_respects_the_schedule_and_blocks_the_lane(store: Store) -> None:
    events = [event("fraud", "1"), event("fraud", "2")]
    queue(store, events, deliveries_for(events, "a"))
    (head,) = due_deliveries(store, NOW)
    store.record_attempt(
        Attempt(head.delivery_id, NOW, 503, "HTTP 503", 3.0),
        status=PENDING,
        next_attempt_at=NOW + 60,
    )
    assert due_deliveries(store, NOW) == []
    assert due_deliveries(store, NOW + 59) == []
    (later,) = due_deliveries(store, NOW + 60)
    assert later.delivery_id == head.delivery_id
    assert later.attempts == 1
    (forced,) = due_deliveries(store, NOW, ignore_schedule=True)
    assert forced.delivery_id == head.delivery_id


def test_due_deliveries_honours_exclude_without_skipping_ahead(store: Store) -> None:
    fraud1, fraud2, churn1 = event("fraud", "1"), event("fraud", "2"), event("churn", "1")
    queue(store, [fraud1, fraud2, churn1], deliveries_for([fraud1, fraud2, churn1], "a"))
    heads = due_deliveries(store, NOW)
    excluded = heads[0].delivery_id
    remaining = due_deliveries(store, NOW, exclude=[excluded])
    assert [d.event.model_name for d in remaining] == ["churn"]
    assert all(d.event != fraud2 for d in remaining)


def test_dead_rows_leave_the_lane_but_stay_listed(store: Store) -> None:
    events = [event("fraud", "1"), event("fraud", "2")]
    queue(store, events, deliveries_for(events, "a"))
    (head,) = due_deliveries(store, NOW)
    store.record_attempt(Attempt(head.delivery_id, NOW, 404, "HTTP 404", 2.0), status=DEAD)
    (nxt,) = due_deliveries(store, NOW)
    assert nxt.event == events[1]
    (dead,) = deliveries(store, DEAD)
    assert dead.delivery_id == head.delivery_id


def test_record_attempt_updates_the_row_and_logs_each_attempt(store: Store) -> None:
    events = [event("fraud", "1")]
    (delivery,) = deliveries_for(events, "a")
    queue(store, events, [delivery])
    store.record_attempt(
        Attempt(delivery.delivery_id, NOW + 1, None, "connection failed", 12.5),
        status=PENDING,
        next_attempt_at=NOW + 10,
    )
    store.record_attempt(Attempt(delivery.delivery_id, NOW + 10, 200, None, 4.0), status=DELIVERED)
    (row,) = deliveries(store)
    assert row.status == DELIVERED
    assert row.attempts == 2
    assert row.last_status_code == 200
    assert row.last_error is None
    assert row.next_attempt_at == NOW + 10
    assert attempts(store, delivery.delivery_id) == [
        Attempt(delivery.delivery_id, NOW + 1, None, "connection failed", 12.5),
        Attempt(delivery.delivery_id, NOW + 10, 200, None, 4.0),
    ]
    assert due_deliveries(store, NOW + 100, ignore_schedule=True) == []
    assert deliveries(store, PENDING) == []
    assert [d.delivery_id for d in deliveries(store, DELIVERED)] == [delivery.delivery_id]


def test_status_counts_and_oldest_pending(store: Store) -> None:
    assert store.status_counts() == {}
    assert oldest_pending(store) is None
    events = [event("fraud", "1"), event("fraud", "2"), event("churn", "1")]
    queue(store, events, deliveries_for(events, "a", "b"))
    heads = {(d.webhook, d.event.model_name): d for d in due_deliveries(store, NOW)}
    store.record_attempt(
        Attempt(heads[("a", "fraud")].delivery_id, NOW, 200, None, 1.0), status=DELIVERED
    )
    store.record_attempt(
        Attempt(heads[("b", "churn")].delivery_id, NOW, 410, "HTTP 410", 1.0), status=DEAD
    )
    assert store.status_counts() == {
        "a": {PENDING: 2, DELIVERED: 1},
        "b": {PENDING: 2, DEAD: 1},
    }
    assert oldest_pending(store) == NOW
