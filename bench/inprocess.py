"""The parts measured in this process: (a) steady state, (b) the naive poller, (d) a full reconcile
and (f) delivery throughput through Deliverer.drain()."""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench import naive
from bench.common import (
    BACKLOG,
    CHANGE_CYCLES,
    FIXED_CADENCE,
    REPEATS,
    STEADY,
    STEADY_CYCLES,
    config_for,
    other_stage,
    profiled,
    read_db,
    say,
    timed_cycle,
)
from bench.seed import model_name
from bench.states import States
from tests.e2e.harness import MlflowServer, Receiver
from watcher.deliver import Deliverer
from watcher.detect import Policy, detect
from watcher.logs import get_logger
from watcher.model import Event, Observation, SnapshotDelta, make_delivery_id
from watcher.pipeline import CycleReport, Pipeline
from watcher.store import PENDING, NewDelivery, Store

# --------------------------------------------------------------------------- (a) (b) (d)


def steady_state(pipeline: Pipeline, client: Any, db: Path) -> dict[str, Any]:
    """(a): a baseline full read, then cycles with no change and cycles with one transition."""
    wall, base = timed_cycle(pipeline)
    if not base.baseline or base.kind != "full":
        raise RuntimeError(f"the first cycle was {base.kind}, not a full baseline")
    say(f"baseline: {wall:.2f}s, {base.requests} requests, {base.versions} versions")
    quiet: list[tuple[float, CycleReport]] = []
    for _ in range(STEADY_CYCLES):
        wall_s, report = timed_cycle(pipeline)
        if report.kind != "incremental" or report.events:
            raise RuntimeError(f"a quiet steady cycle was {report.kind}, {len(report.events)} ev")
        quiet.append((wall_s, report))
    changed: list[tuple[float, CycleReport]] = []
    for i in range(CHANGE_CYCLES):
        name = model_name(i)
        version = str(
            read_db(db, "SELECT MAX(version) FROM model_versions WHERE name = ?", (name,))[0][0]
        )
        current = client.get_model_version(name, version).current_stage
        stage = other_stage(current, ("Staging", "Production", "Archived")[i % 3])
        client.transition_model_version_stage(name, version, stage)
        wall_s, report = timed_cycle(pipeline)
        seen = [
            e
            for e in report.events
            if e.type.value == "MODEL_VERSION_TRANSITIONED_STAGE"
            and (e.model_name, e.model_version, e.to_stage) == (name, version, stage)
        ]
        if report.kind != "incremental" or not seen:
            raise RuntimeError(f"a change cycle was {report.kind} and saw {report.events}")
        changed.append((wall_s, report))
    return {
        "baseline": {
            "wall_s": round(wall, 3),
            "requests": base.requests,
            "bytes": base.bytes_read,
            "mlflow_s": round(base.mlflow_ms / 1000, 3),
        },
        "quiet": _cycle_summary(quiet),
        "one_change": _cycle_summary(changed),
        "kinds": sorted({r.kind for _, r in quiet + changed}),
        "cadences_fixed_s": FIXED_CADENCE,
    }


def _cycle_summary(cycles: list[tuple[float, CycleReport]]) -> dict[str, Any]:
    return {
        "cycles": len(cycles),
        "wall_s_median": round(statistics.median(w for w, _ in cycles), 4),
        "wall_s_max": round(max(w for w, _ in cycles), 4),
        "duration_ms_median": round(statistics.median(r.duration_ms for _, r in cycles), 1),
        "mlflow_ms_median": round(statistics.median(r.mlflow_ms for _, r in cycles), 1),
        "requests_median": statistics.median(r.requests for _, r in cycles),
        "requests_max": max(r.requests for _, r in cycles),
        "bytes_median": statistics.median(r.bytes_read for _, r in cycles),
    }


def naive_poller(client: Any) -> dict[str, Any]:
    """(b): the same job done the naive way, timed the same way."""
    scans = [naive.full_scan(client) for _ in range(REPEATS)]
    return {
        "page_size": naive.PAGE_SIZE,
        "runs": [round(s.seconds, 3) for s in scans],
        "wall_s_median": round(statistics.median(s.seconds for s in scans), 3),
        "requests": scans[0].requests,
        "models": scans[0].models,
        "versions": scans[0].versions,
    }


def reconcile(
    pipeline: Pipeline, profile_dir: Path | None, size: int, backend: str
) -> dict[str, Any]:
    """(d): full reads on top of the steady snapshot: none may find anything new."""
    runs = []
    for i in range(REPEATS):
        if i == 0:
            wall, report = profiled(
                profile_dir, f"reconcile-{size}-{backend}", lambda: timed_cycle(pipeline, full=True)
            )
        else:
            wall, report = timed_cycle(pipeline, full=True)
        if report.kind != "full":
            raise RuntimeError(f"a full reconcile read {report.kind}")
        inside = report.duration_ms - report.mlflow_ms
        runs.append(
            {
                "wall_s": round(wall, 3),
                "duration_ms": round(report.duration_ms, 1),
                "mlflow_ms": round(report.mlflow_ms, 1),
                "inside_ms": round(inside, 1),
                "inside_share": round(inside / report.mlflow_ms, 4),
                "inside_share_wall": round((wall * 1000 - report.mlflow_ms) / report.mlflow_ms, 4),
                "requests": report.requests,
                "bytes": report.bytes_read,
                "events": len(report.events),
            }
        )
    middle = sorted(runs, key=lambda r: r["duration_ms"])[len(runs) // 2]
    return {"runs": runs, "median": middle, "events_found": sum(r["events"] for r in runs)}


# --------------------------------------------------------------------------- (f)


def backlog_events(snapshot: Observation, registry: str) -> list[Event]:
    """BACKLOG real events (what emit_existing would send for the oldest versions of every
    model), the same number for every model (5 each over 1,000 models: 1,000 lanes)."""
    by_model: dict[str, list[tuple[str, str]]] = {}
    for key in snapshot.versions:
        by_model.setdefault(key[0], []).append(key)
    keep = {k for keys in by_model.values() for k in sorted(keys, key=lambda k: int(k[1]))[:3]}
    subset = Observation(
        models=dict(snapshot.models),
        versions={k: v for k, v in snapshot.versions.items() if k in keep},
        read_at=snapshot.read_at,
    )
    candidates = detect(None, subset, Policy(registry=registry, emit_existing=True))
    per_model = BACKLOG // len(snapshot.models)
    taken: dict[str, int] = {}
    chosen: set[str] = set()
    for event in candidates:
        if taken.get(event.model_name, 0) < per_model:
            taken[event.model_name] = taken.get(event.model_name, 0) + 1
            chosen.add(event.event_id)
    for event in candidates:  # a small registry: fill up from what is left
        if len(chosen) < BACKLOG:
            chosen.add(event.event_id)
    events = [e for e in candidates if e.event_id in chosen][:BACKLOG]
    if len(events) < BACKLOG:
        raise RuntimeError(f"only {len(events)} events for the backlog")
    return events


def queue_backlog(store: Store, events: list[Event]) -> int:
    """Commits ``events`` and one pending delivery each to the webhook "bench"."""
    deliveries = [
        NewDelivery(make_delivery_id(e.event_id, "bench"), e.event_id, "bench", e.model_name)
        for e in events
    ]
    return store.commit_cycle(SnapshotDelta(), events, deliveries, {})


def throughput(
    events: list[Event], states: States, profile_dir: Path | None, size: int
) -> dict[str, Any]:
    """(f): the backlog drained by Deliverer.drain() to a receiver that answers 200 at once.
    Then the same events again with their model names rewritten onto 10 models (10 lanes),
    to show how the lane count matters."""
    result = drain_backlog(events, states, "throughput", profile_dir, f"drain-{size}")
    result["event_types"] = sorted({e.type.value for e in events})
    few = [
        dataclasses.replace(e, model_name=model_name(i % 10), event_id=uuid.uuid4().hex)
        for i, e in enumerate(events)
    ]
    result["ten_lanes"] = drain_backlog(few, states, "throughput_10", None, "")
    return result


def drain_backlog(
    events: list[Event], states: States, tag: str, profile_dir: Path | None, name: str
) -> dict[str, Any]:
    receiver = Receiver()
    receiver.start()
    store = states.store(tag)
    try:
        config = config_for(
            "http://127.0.0.1:1", states.path(tag), receiver.url, fixed_cadences=True
        )
        queued = queue_backlog(store, events)
        deliverer = Deliverer(store, config, get_logger())
        started = time.monotonic()
        report = profiled(profile_dir, f"{name}-{states.name}" if name else "", deliverer.drain)
        seconds = time.monotonic() - started
        deliverer.close()
        received = {d.header("X-MLflow-Delivery-Id") for d in receiver.deliveries()}
        if report.delivered != len(events) or len(received) != len(events):
            raise RuntimeError(f"drain delivered {report.delivered}, received {len(received)}")
        return {
            "backlog": queued,
            "lanes": len({e.model_name for e in events}),
            "workers": config.delivery.workers,
            "seconds": round(seconds, 3),
            "events_per_s": round(len(events) / seconds, 1),
        }
    finally:
        store.close()
        receiver.stop()


def in_process(
    result: dict[str, Any],
    server: MlflowServer,
    states: States,
    hook: str,
    profile_dir: Path | None,
    size: int,
    parts: str,
) -> None:
    """(a), (d) and (f) on one backend, in this process; (d), (f) and (h) start from a
    baseline, which (a) reads first when it is measured too. For (h), the backlog is left
    queued in that state ("steady"), for the daemon to drain."""
    if not set(parts) & set("adfh"):
        return
    client = server.client()
    store = states.store(STEADY)
    config = config_for(server.url, states.path(STEADY), hook, fixed_cadences=True)
    pipeline = Pipeline(config, store, get_logger())
    try:
        if "a" in parts:
            say(f"(a) steady state, {states.name}")
            result["steady"] = steady_state(pipeline, client, server.db)
        else:
            timed_cycle(pipeline)
        if "d" in parts:
            say(f"(d) full reconcile, {states.name}")
            result["reconcile"] = reconcile(pipeline, profile_dir, size, states.name)
        if not set(parts) & set("fh"):
            return
        snapshot = store.load_snapshot()
        assert snapshot is not None
        events = backlog_events(snapshot, pipeline.registry)
        if "f" in parts:
            say(f"(f) delivery throughput, {states.name}")
            result["throughput"] = throughput(events, states, profile_dir, size)
        if "h" in parts:
            fresh = [dataclasses.replace(e, event_id=uuid.uuid4().hex) for e in events]
            queue_backlog(store, fresh)
            # With the few (a)'s transitions queued and never sent in process: all are drained.
            result["daemon_backlog"] = store.summary().total(PENDING)
    finally:
        store.close()
