"""The snapshot and the commit of a cycle: what was last seen, and what changed since.

The snapshot of one cycle and the outbox rows it produced are written in one transaction, so a
crash (even ``kill -9``) either keeps both or neither: an event, once detected, is never lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from watcher import state_meta as sm
from watcher.model import Event, ModelState, Observation, SnapshotDelta, VersionState
from watcher.store.database import Database, Tx, dumps, set_meta
from watcher.store.rows import NewDelivery


class SnapshotQueries(Database):
    """Reading the last snapshot and committing a cycle over it."""

    def load_snapshot(self) -> Observation | None:
        """The last complete snapshot, or None before the first (baseline) cycle."""
        baseline = self.get_meta(sm.BASELINE_AT.name)
        if baseline is None:
            return None
        models = {
            str(r["name"]): ModelState.from_dict(json.loads(r["data"]))
            for r in self._query("SELECT name, data FROM snapshot_models")
        }
        versions: dict[tuple[str, str], VersionState] = {}
        # row by row: 100k rows of JSON are never all in memory at once
        for (data,) in self._stream("SELECT data FROM snapshot_versions"):
            version = VersionState.from_dict(json.loads(data))
            versions[version.key] = version
        read_at = int(self.get_meta(sm.SNAPSHOT_READ_AT.name) or 0)
        return Observation(models=models, versions=versions, read_at=read_at)

    def commit_cycle(
        self,
        delta: SnapshotDelta,
        events: Sequence[Event],
        deliveries: Sequence[NewDelivery],
        meta: dict[str, str],
        now: float | None = None,
    ) -> int:
        """Write the snapshot change, the events and their outbox rows in one transaction.

        Returns how many new deliveries were queued. Rows that already exist (the same change
        detected again after a crash) are left as they are.
        """
        now = time.time() if now is None else now
        with self._fenced() as tx:
            _apply_delta(tx, delta)
            insert_events(tx, events, now)
            queued = insert_deliveries(tx, deliveries, now)
            set_meta(tx, meta)
        return queued


def _apply_delta(tx: Tx, delta: SnapshotDelta) -> None:
    """Only what changed is written, so a quiet cycle over 100k versions touches a handful of
    rows."""
    tx.executemany(
        "DELETE FROM snapshot_models WHERE name = ?", ((n,) for n in delta.delete_models)
    )
    tx.executemany(
        "DELETE FROM snapshot_versions WHERE name = ? AND version = ?", delta.delete_versions
    )
    tx.executemany(
        "INSERT INTO snapshot_models (name, data) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET data = excluded.data",
        ((m.name, dumps(m.to_dict())) for m in delta.upsert_models),
    )
    tx.executemany(
        "INSERT INTO snapshot_versions (name, version, data) VALUES (?, ?, ?)"
        " ON CONFLICT (name, version) DO UPDATE SET data = excluded.data",
        ((v.name, v.version, dumps(v.to_dict())) for v in delta.upsert_versions),
    )


def insert_events(tx: Tx, events: Sequence[Event], now: float) -> None:
    """Events already stored (detected again after a crash) keep their first detection time."""
    tx.executemany(
        "INSERT INTO events"
        " (event_id, type, model_name, model_version, data, detected_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            (e.event_id, e.type.value, e.model_name, e.model_version, dumps(e.to_dict()), now)
            for e in events
        ),
    )


def insert_deliveries(tx: Tx, deliveries: Sequence[NewDelivery], now: float) -> int:
    """Queue outbox rows, due ``now``; a row already queued (the same change detected again
    after a crash) is left as it is. Returns how many were queued."""
    return tx.executemany(
        "INSERT INTO deliveries (delivery_id, event_id, webhook, model_name,"
        " status, created_at, next_attempt_at, updated_at)"
        " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
        ((d.delivery_id, d.event_id, d.webhook, d.model_name, now, now, now) for d in deliveries),
    )
