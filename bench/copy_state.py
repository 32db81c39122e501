"""How long `state copy` takes at 100k versions: a SQLite state seeded as a watcher of 100k
versions over 1,000 models would hold it (the snapshot, a backlog of events with deliveries to
two webhooks, an attempt log), copied into a namespace of a private PostgreSQL cluster.

    python -m bench.copy_state            # 100k versions
    BENCH_SIZES=20000 python -m bench.copy_state

Prints the seconds of the copy itself (opening both states, reading, writing, committing) and
the process's peak RSS; the seeding (in a child process) is not counted.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

from tests.pg import PgCluster
from watcher.model import (
    Event,
    EventType,
    ModelState,
    SnapshotDelta,
    VersionState,
    make_delivery_id,
    make_event_id,
)
from watcher.store import (
    DELIVERED,
    Attempt,
    NewDelivery,
    PgSettings,
    Store,
    copy_state,
    open_sqlite_source,
)

MODELS = 1000
EVENTS = 5000
NOW = 1_700_000_000.0


def seed(path: Path, versions: int) -> None:
    """A state as a watcher of ``versions`` versions leaves it after a busy while."""
    per_model = versions // MODELS
    models = [ModelState(f"bench-model-{m:04d}", 1, 2, tags={"team": "t"}) for m in range(MODELS)]
    rows = [
        VersionState(m.name, str(v), v, v + 1, "Archived", run_id=f"run-{v}", tags={"k": "v"})
        for m in models
        for v in range(1, per_model + 1)
    ]
    kind = EventType.MODEL_VERSION_TRANSITIONED_STAGE
    events = [
        Event(
            event_id=make_event_id("bench", kind, models[i % MODELS].name, "1", 1, "None", "S", i),
            type=kind,
            model_name=models[i % MODELS].name,
            timestamp=i,
            model_version="1",
            version_creation_timestamp=1,
            from_stage="None",
            to_stage="Staging",
        )
        for i in range(EVENTS)
    ]
    outbox = [
        NewDelivery(make_delivery_id(e.event_id, hook), e.event_id, hook, e.model_name)
        for hook in ("deploy", "audit")
        for e in events
    ]
    with Store.open(path) as store:
        delta = SnapshotDelta(upsert_models=tuple(models), upsert_versions=tuple(rows))
        store.commit_cycle(delta, events, outbox, {"baseline_at": "2023-11-14T22:13:20Z"}, NOW)
        for row in outbox[: len(outbox) // 2]:
            attempt = Attempt(row.delivery_id, NOW + 1, 200, None, 3.0, response="ok")
            store.record_attempt(attempt, status=DELIVERED)


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100000").split(",")]
    with tempfile.TemporaryDirectory() as tmp, PgCluster() as cluster:
        for size in sizes:
            path = Path(tmp) / f"state-{size}.db"
            # seeded in a child, so the peak RSS below is the copy's own
            child = multiprocessing.get_context("fork").Process(target=seed, args=(path, size))
            child.start()
            child.join()
            db = cluster.create_database()
            started = time.monotonic()
            with (
                open_sqlite_source(path) as source,
                Store.connect(PgSettings(db.url, "copied", db.password)) as target,
            ):
                report = copy_state(source, target)
            took = time.monotonic() - started
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            counts = ", ".join(f"{t} {n}" for t, n in report.rows.items())
            print(f"{size} versions: copied in {took:.1f} s, peak RSS {rss:.0f} MB ({counts})")


if __name__ == "__main__":
    main()
