"""(c) and (e): the real daemon, its detection latency for every kind of change, and its
peak RSS."""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    INTERVAL,
    TRANSITIONS,
    other_stage,
    percentile,
    proc_status,
    read_db,
    say,
    watcher_toml,
)
from bench.seed import model_name
from bench.states import States
from tests.e2e.harness import Daemon, MlflowServer, Receiver
from watcher.model import EventType

# --------------------------------------------------------------------------- (c) (e)


@dataclass
class Expected:
    label: str
    event: str
    match: dict[str, Any]
    t0: float
    arrived: float | None = None
    extra: list[str] = field(default_factory=list)
    by: int | None = None
    """The delivery that matched it (its id())."""


def daemon_run(
    server: MlflowServer, states: States, rng: random.Random, slot: int = 0
) -> dict[str, Any]:
    """(c) and (e): the real daemon, changes made over REST, deliveries timed at arrival.
    ``slot`` picks the models the changes of other kinds touch (a model deleted in one run
    cannot be deleted again in the next backend's)."""
    receiver = Receiver()
    receiver.start()
    config = watcher_toml(
        states.workdir / f"daemon-{states.name}.toml",
        server.url,
        states.path("daemon"),
        receiver.url,
        watch=f'interval = "{INTERVAL:g}s"'
        + (f'\nhot_window = "{HOT_WINDOW}"' if HOT_WINDOW else ""),
        # Every event by name: "*" leaves out the stage-specific transition events.
        webhook=f"events = {json.dumps([e.value for e in EventType])}",
    )
    daemon = Daemon(config, states.env("daemon"))
    client = server.client()
    try:
        started = time.monotonic()
        daemon.start()
        daemon.wait_logged("poll.baseline", timeout=600)
        baseline_s = time.monotonic() - started
        rss_after_baseline = proc_status(_pid(daemon))
        say(f"daemon baseline after {baseline_s:.1f}s, RSS {rss_after_baseline}")
        time.sleep(INTERVAL)
        hot_models = [model_name(HOT_FROM + 100 * slot + i) for i in range(HOT_PER_KIND * 6)]
        hot_changes = _hot_changes(hot_models)
        warmed = _warm(client, hot_models)
        patience_extra = HOT_AFTER + 3.0 * len(hot_changes)  # they come one per transition

        # Transitions go on, 0.5-3 s apart, until one change of every other kind has been
        # delivered: those wait for the full scans' cadences, so the transitions sample whole
        # cadence periods, scans included, not just the quiet minute after a baseline.
        changes: list[Expected] = []
        transitions: list[Expected] = []
        kinds = list(EVERY_KIND)
        # The transitions go round a pool of models (one model's turn comes again after 25 s
        # at least: never two of its transitions within a poll), so the hot set is the same
        # size however long the slowest change takes: about 60 + TRANSITION_POOL + 10 models.
        free_models = itertools.cycle(range(100, 100 + TRANSITION_POOL))
        deadline = time.monotonic() + _patience(daemon) + patience_extra
        last_note = 0.0
        while time.monotonic() < deadline:
            _match_arrivals(receiver, changes + transitions)
            if (
                len(transitions) >= TRANSITIONS
                and not kinds
                and not hot_changes
                and all(c.arrived for c in changes)
            ):
                break
            index = next(free_models)
            transitions.append(_transition(client, model_name(index), len(transitions), changes))
            if kinds:
                changes.append(kinds.pop(0)(server, client, KINDS_FROM + 10 * slot))
            if hot_changes and time.monotonic() - warmed > HOT_AFTER:
                changes.append(hot_changes.pop(0)(client))
            if time.monotonic() - last_note > 30:
                missing = sorted({c.label for c in changes if c.arrived is None})
                say(f"{len(transitions)} transitions so far; waiting for {missing}")
                last_note = time.monotonic()
            time.sleep(rng.uniform(0.5, 3.0))
        changes.extend(transitions)
        deadline = max(deadline, time.monotonic() + 60)
        while time.monotonic() < deadline:
            _match_arrivals(receiver, changes)
            if all(c.arrived is not None for c in changes):
                break
            time.sleep(0.25)
        rss = proc_status(_pid(daemon))
        polls = daemon.logged("poll.finished")
        failed = daemon.logged("poll.failed")
        cadences = daemon.logged("poll.cadence")
        poll_kinds: dict[str, int] = {}
        for poll in polls:
            poll_kinds[str(poll.get("read"))] = poll_kinds.get(str(poll.get("read")), 0) + 1
        latencies = [c.arrived - c.t0 for c in transitions if c.arrived is not None]
        spans = _scan_spans(polls, daemon.logged("scan.merged"))
        during_scans = _during_scans(spans, transitions)
        per_type: dict[str, float | None] = {}
        for c in changes:
            value = None if c.arrived is None else round(c.arrived - c.t0, 2)
            worst = per_type.get(c.label, 0.0)
            per_type[c.label] = None if value is None or worst is None else max(worst, value)
        hot = _hot_report(
            changes,
            transitions,
            polls,
            daemon.logged("scan.merged"),
            [
                {
                    k: line.get(k)
                    for k in ("models", "per_poll", "round_s", "records_every_s", "window_s")
                }
                for line in daemon.logged("poll.hot")
            ],
        )
        say(f"hot set: {json.dumps(hot)}")
        return {
            "hot_set": hot,
            "interval_s": INTERVAL,
            "baseline_s": round(baseline_s, 2),
            "transitions": len(transitions),
            "transitions_delivered": len(latencies),
            "latency_p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
            "latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "latencies_s": [round(x, 3) for x in latencies],
            "worst_latency_by_change_s": per_type,
            "all_delivered": all(c.arrived is not None for c in changes),
            "undelivered": sorted({c.label for c in changes if c.arrived is None}),
            "deliveries_received": len(receiver.deliveries()),
            "polls": poll_kinds,
            "polls_failed": len(failed),
            "slowest_poll_ms": max((p.get("duration_ms", 0) for p in polls), default=0),
            "transitions_during_scans": len(during_scans),
            "latencies_during_scans_s": during_scans,
            "scan_polls_ms": [
                [p.get("read"), p.get("duration_ms")]
                for p in polls
                if p.get("read") != "incremental"
            ],
            "scans_ms": [[kind, round((end - start) * 1000)] for kind, start, end in spans],
            "cadences": {
                k: v for k, v in (cadences[-1] if cadences else {}).items() if k.endswith("_s")
            },
            "rss_after_baseline_mb": round(rss_after_baseline.get("VmHWM", 0), 1),
            "peak_rss_mb": round(rss.get("VmHWM", 0), 1),
            "rss_end_mb": round(rss.get("VmRSS", 0), 1),
        }
    finally:
        if daemon.alive():
            daemon.terminate()
        receiver.stop()


TRANSITION_POOL = 50
"""The models (c)'s stage transitions take turns on: each is in the hot set from its first."""
HOT_WINDOW = os.environ.get("BENCH_HOT_WINDOW", "")
"""`watch.hot_window` for (c) (e.g. "24h", or "off"); empty: the config's default."""
HOT_FROM = 600
"""The models (c) makes hot: 100 from here for each backend's run, 10 per kind of change."""
HOT_PER_KIND = 10
HOT_AFTER = 15.0
"""Seconds between the versions that make models hot and the first change timed on them:
outside the polls' 10 s overlap, so only the hot set (or a scan) can see those changes."""
HOT_ALIAS, HOT_TAG = "bench-hot", "bench_hot_tag"


def _warm(client: Any, names: list[str]) -> float:
    """Make models hot as a user's day does: an alias and a tag on version 1, then a new
    version of each. Returns when (time.monotonic()) the last version was created."""
    for name in names:
        client.set_registered_model_alias(name, HOT_ALIAS, "1")
        client.set_model_version_tag(name, "1", HOT_TAG, "pending")
    for name in names:
        client.create_model_version(
            name, f"s3://bench-bucket/models/{name}/hot", await_creation_for=0
        )
    say(f"{len(names)} models made hot; their changes start in {HOT_AFTER:g}s")
    return time.monotonic()


HotChange = Callable[[Any], Expected]


def _hot_changes(names: list[str]) -> list[HotChange]:
    """One change per hot model, the kinds interleaved (so each kind is spread over the run's
    scan cadences): alias set, moved and deleted, version 1's tag set and deleted (an old
    version, not the newest), model deleted."""
    kinds = [_hot_alias_set, _hot_alias_moved, _hot_alias_deleted, _hot_tag_set]
    kinds += [_hot_tag_deleted, _hot_model_deleted]
    by_kind = [names[i :: len(kinds)] for i in range(len(kinds))]
    changes: list[HotChange] = []
    for round_ in range(HOT_PER_KIND):
        for kind, models in zip(kinds, by_kind, strict=True):
            changes.append(functools.partial(kind, name=models[round_]))
    return changes


def _hot_alias_set(client: Any, name: str) -> Expected:
    t0 = _now()
    client.set_registered_model_alias(name, "bench-hot-new", "1")
    match = {"model_name": name, "model_version": "1", "alias": "bench-hot-new"}
    return Expected("hot: alias set", "MODEL_VERSION_ALIAS_CREATED", match, t0)


def _hot_alias_moved(client: Any, name: str) -> Expected:
    newest = max((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int)
    t0 = _now()
    client.set_registered_model_alias(name, HOT_ALIAS, str(newest))
    match = {"model_name": name, "alias": HOT_ALIAS, "previous_version": "1"}
    return Expected("hot: alias moved", "MODEL_VERSION_ALIAS_CREATED", match, t0)


def _hot_alias_deleted(client: Any, name: str) -> Expected:
    t0 = _now()
    client.delete_registered_model_alias(name, HOT_ALIAS)
    match = {"model_name": name, "alias": HOT_ALIAS}
    return Expected("hot: alias deleted", "MODEL_VERSION_ALIAS_DELETED", match, t0)


def _hot_tag_set(client: Any, name: str) -> Expected:
    t0 = _now()
    client.set_model_version_tag(name, "1", HOT_TAG, "approved")
    match = {"model_name": name, "model_version": "1", "tag_key": HOT_TAG, "tag_value": "approved"}
    return Expected("hot: version tag set", "MODEL_VERSION_TAG_SET", match, t0)


def _hot_tag_deleted(client: Any, name: str) -> Expected:
    t0 = _now()
    client.delete_model_version_tag(name, "1", HOT_TAG)
    match = {"model_name": name, "model_version": "1", "tag_key": HOT_TAG}
    return Expected("hot: version tag deleted", "MODEL_VERSION_TAG_DELETED", match, t0)


def _hot_model_deleted(client: Any, name: str) -> Expected:
    t0 = _now()
    client.delete_registered_model(name)
    return Expected("hot: model deleted", "REGISTERED_MODEL_DELETED", {"model_name": name}, t0)


def _hot_report(
    changes: list[Expected],
    transitions: list[Expected],
    polls: list[dict[str, Any]],
    scans: list[dict[str, Any]],
    rotations: list[dict[str, Any]],
) -> dict[str, Any]:
    """Per kind of change on a hot model (and the stage transitions): n, p50, p99, worst;
    and the read duty: the time spent waiting for MLflow (the polls' own, background scans
    included) over the wall time the polls after the baseline covered."""
    by_kind: dict[str, list[float]] = {}
    for c in changes:  # the transitions are among them by now
        if c.label.startswith("hot: ") or c.label == "stage transition":
            by_kind.setdefault(c.label, [])
            if c.arrived is not None:
                by_kind[c.label].append(c.arrived - c.t0)
    kinds = {
        label: {
            "n": len(values),
            "p50_s": round(percentile(values, 0.5), 2) if values else None,
            "p99_s": round(percentile(values, 0.99), 2) if values else None,
            "worst_s": round(max(values), 2) if values else None,
        }
        for label, values in sorted(by_kind.items())
    }
    after = polls[1:]
    stamps = [
        datetime.datetime.fromisoformat(p["timestamp"]).timestamp()
        for p in after
        if "timestamp" in p
    ]
    polls_s = sum(float(p.get("mlflow_ms", 0)) for p in after) / 1000
    hot_s = sum(float(p.get("hot_ms", 0)) for p in after) / 1000
    in_poll_scans_s = sum(
        float(p.get("mlflow_ms", 0)) / 1000
        for p in after
        if SCAN_READS & set(str(p.get("read")).split("+"))
    )
    scans_s = sum(float(s.get("duration_ms", 0)) for s in scans) / 1000 + in_poll_scans_s
    wall_s = (max(stamps) - min(stamps) + INTERVAL) if stamps else 0.0
    hot_reads = [p for p in after if "hot" in str(p.get("read"))]
    hot_ms = [float(p.get("hot_ms", 0)) for p in hot_reads]
    hot_polls_ms = [float(p.get("duration_ms", 0)) for p in hot_reads]

    def share(seconds: float) -> float | None:
        return round(seconds / wall_s, 3) if wall_s else None

    return {
        "duty_budgeted": share(hot_s + scans_s),
        "duty_hot": share(hot_s),
        "duty_scans": share(scans_s),
        "duty_polls_own": share(polls_s - hot_s - in_poll_scans_s),
        "hot_logged": rotations[-5:],
        "hot_logged_lines": len(rotations),
        "kinds": kinds,
        "read_duty": share(polls_s + scans_s - in_poll_scans_s),
        "polls_reading_hot_set": len(hot_reads),
        "hot_ms_p50_p99_max": _spread(hot_ms),
        "hot_polls_ms_p50_p99_max": _spread(hot_polls_ms),
        "polls": len(after),
    }


def _spread(values: list[float]) -> list[float] | None:
    """p50, p99 and the worst of some milliseconds, rounded (None: no value)."""
    if not values:
        return None
    return [round(percentile(values, 0.5)), round(percentile(values, 0.99)), round(max(values))]


def _transition(client: Any, name: str, index: int, changes: list[Expected]) -> Expected:
    """Move version 1 of a model to another stage; the specific event is expected as well."""
    version = "1"
    current = client.get_model_version(name, version).current_stage
    stage = other_stage(current, ("Staging", "Production", "Archived", "None")[index % 4])
    match = {"model_name": name, "model_version": version, "to_stage": stage}
    t0 = time.monotonic()
    client.transition_model_version_stage(name, version, stage)
    specific = {"Staging": "STAGING", "Production": "PRODUCTION", "Archived": "ARCHIVED"}
    if stage in specific:
        event = f"MODEL_VERSION_TRANSITIONED_TO_{specific[stage]}"
        changes.append(Expected(f"transition to {stage}", event, match, t0))
    return Expected("stage transition", "MODEL_VERSION_TRANSITIONED_STAGE", match, t0)


SCAN_READS = {"full", "models", "versions"}
"""The parts of a poll's `read` that mean it scanned in its own time."""
Span = tuple[str, float, float]
"""A full scan: its kind, and when it started and ended (time.monotonic())."""


def _scan_spans(polls: list[dict[str, Any]], scans: list[dict[str, Any]]) -> list[Span]:
    """When each full scan ran, in time.monotonic(): a poll that scanned in its own time, or
    a background scan (from its scan.merged line: merged waited_ms after it finished)."""
    to_monotonic = time.monotonic() - time.time()
    spans: list[Span] = []
    for poll in polls:
        read = str(poll.get("read"))
        if not SCAN_READS & set(read.split("+")) or "timestamp" not in poll:
            continue  # an incremental poll (with the hot set or hints), or one merging a scan
        end = datetime.datetime.fromisoformat(poll["timestamp"]).timestamp() + to_monotonic
        spans.append((read, end - float(poll.get("duration_ms", 0)) / 1000, end))
    for scan in scans:
        if "timestamp" not in scan:
            continue
        merged = datetime.datetime.fromisoformat(scan["timestamp"]).timestamp() + to_monotonic
        end = merged - float(scan.get("waited_ms", 0)) / 1000
        spans.append((f"{scan.get('kinds')} (background)", end - scan["duration_ms"] / 1000, end))
    return sorted(spans, key=lambda span: span[1])


def _during_scans(spans: list[Span], transitions: list[Expected]) -> list[float]:
    """Latencies of the transitions made while a full scan was running."""
    return [
        round(c.arrived - c.t0, 3)
        for c in transitions
        if c.arrived is not None and any(start <= c.t0 <= end for _, start, end in spans)
    ]


def _pid(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def _patience(daemon: Daemon) -> float:
    """How long to wait for the slowest event: two of each auto cadence, plus a minute."""
    logged = daemon.logged("poll.cadence")
    cadences = logged[-1] if logged else {}
    return 60.0 + 2 * (
        float(cadences.get("models_scan_every_s", 60))
        + float(cadences.get("versions_scan_every_s", 60))
    )


def _match_arrivals(receiver: Receiver, changes: list[Expected]) -> None:
    """Each delivery to the first change it matches, made before it arrived; a delivery
    matched once is not matched again (a pool model's transitions recur)."""
    used = {c.by for c in changes if c.by is not None}
    for delivery in receiver.deliveries():
        if id(delivery) in used:
            continue
        body = delivery.json
        for change in changes:
            if change.arrived is not None or body.get("event") != change.event:
                continue
            if delivery.at < change.t0:
                continue
            if all(body.get(k) == v for k, v in change.match.items()):
                change.arrived = delivery.at
                change.by = id(delivery)
                used.add(change.by)
                break


def _now() -> float:
    return time.monotonic()


def model_created(server: MlflowServer, client: Any, name: str) -> Expected:
    """A new model, named after ``name``."""
    new = f"{name}-new-{uuid.uuid4().hex[:8]}"
    t0 = _now()
    client.create_registered_model(new)
    return Expected("model created", "REGISTERED_MODEL_CREATED", {"model_name": new}, t0)


def version_created(server: MlflowServer, client: Any, name: str) -> Expected:
    t0 = _now()
    version = client.create_model_version(
        name, f"s3://bench-bucket/models/{name}/new", await_creation_for=0
    )
    match = {"model_name": name, "model_version": str(version.version)}
    return Expected("version created", "MODEL_VERSION_CREATED", match, t0)


def _unaliased_version(server: MlflowServer, name: str) -> str:
    """A version no alias points at (else one the champion alias does not point at)."""
    for only in ("%", "champion"):
        rows = read_db(
            server.db,
            "SELECT version FROM model_versions WHERE name = ? AND version NOT IN"
            " (SELECT version FROM registered_model_aliases WHERE name = ? AND alias LIKE ?)"
            " ORDER BY version",
            (name, name, only),
        )
        if rows:
            return str(rows[0][0])
    raise RuntimeError(f"{name} has no version to change")


def version_deleted(server: MlflowServer, client: Any, name: str) -> Expected:
    version = _unaliased_version(server, name)
    t0 = _now()
    client.delete_model_version(name, version)
    match = {"model_name": name, "model_version": version}
    return Expected("version deleted", "MODEL_VERSION_DELETED", match, t0)


def model_deleted(server: MlflowServer, client: Any, name: str) -> Expected:
    t0 = _now()
    client.delete_registered_model(name)
    return Expected("model deleted", "REGISTERED_MODEL_DELETED", {"model_name": name}, t0)


def tag_set(server: MlflowServer, client: Any, name: str) -> Expected:
    version = _unaliased_version(server, name)
    t0 = _now()
    client.set_model_version_tag(name, version, "bench_checked", "yes")
    match = {"model_name": name, "model_version": version, "tag_key": "bench_checked"}
    return Expected("version tag set", "MODEL_VERSION_TAG_SET", match, t0)


def tag_deleted(server: MlflowServer, client: Any, name: str) -> Expected:
    """The first version tag of this model, or of the next one by name that has any."""
    rows = read_db(
        server.db,
        "SELECT name, version, key FROM model_version_tags WHERE name >= ? ORDER BY name LIMIT 1",
        (name,),
    )
    name, version, key = rows[0][0], str(rows[0][1]), rows[0][2]
    t0 = _now()
    client.delete_model_version_tag(name, version, key)
    match = {"model_name": name, "model_version": version, "tag_key": key}
    return Expected("version tag deleted", "MODEL_VERSION_TAG_DELETED", match, t0)


def alias_set(server: MlflowServer, client: Any, name: str) -> Expected:
    version = _unaliased_version(server, name)
    t0 = _now()
    client.set_registered_model_alias(name, "bench-canary", version)
    match = {"model_name": name, "model_version": version, "alias": "bench-canary"}
    return Expected("alias set", "MODEL_VERSION_ALIAS_CREATED", match, t0)


def alias_moved(server: MlflowServer, client: Any, name: str) -> Expected:
    """The champion alias (the model must have one) to a version no alias points at."""
    old = str(
        read_db(
            server.db,
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'",
            (name,),
        )[0][0]
    )
    version = _unaliased_version(server, name)
    t0 = _now()
    client.set_registered_model_alias(name, "champion", version)
    match = {
        "model_name": name,
        "model_version": version,
        "alias": "champion",
        "previous_version": old,
    }
    return Expected("alias moved", "MODEL_VERSION_ALIAS_CREATED", match, t0)


def alias_deleted(server: MlflowServer, client: Any, name: str) -> Expected:
    """The champion alias (the model must have one)."""
    t0 = _now()
    client.delete_registered_model_alias(name, "champion")
    match = {"model_name": name, "alias": "champion"}
    return Expected("alias deleted", "MODEL_VERSION_ALIAS_DELETED", match, t0)


Change = Callable[[MlflowServer, Any, str], Expected]
"""A change of one kind on the model named: (c) makes one of each, (k) ten on models drawn
across the registry."""
KINDS_FROM = 900
"""The models the changes of other kinds touch: 10 from here for each backend."""


def _on(change: Change, offset: int) -> Callable[[MlflowServer, Any, int], Expected]:
    """``change`` on the model ``offset`` after a backend's first (KINDS_FROM + 10 * slot)."""
    return lambda server, client, base: change(server, client, model_name(base + offset))


EVERY_KIND: list[Callable[[MlflowServer, Any, int], Expected]] = [
    _on(model_created, 0),
    _on(version_created, 0),
    _on(version_deleted, 1),
    _on(model_deleted, 2),
    _on(tag_set, 3),
    _on(tag_deleted, 4),
    _on(alias_set, 5),
    _on(alias_moved, 6),
    _on(alias_deleted, 7),
]
"""One change of every kind a stage transition does not make, one after each transition."""
