"""The benchmark of issue #5: `make bench` (or `python -m bench.run`) from the repository root.

For each size N (versions over 1,000 models; default 10k and 100k, `BENCH_SIZES="2000"` for a
quick check), one real `mlflow server` (sqlite, 1 worker) is seeded and then measured, in one run:

  (a) the watcher's steady-state cycle, in process (Pipeline.run_cycle): wall time, requests,
      bytes; cycles with no change and cycles with one stage transition;
  (b) a naive poller doing the same job (every page of every search, MlflowClient, page 1000);
  (c) detection latency of stage transitions, REST call -> webhook at a local receiver, with the
      real daemon (`mlflow-watcher run`, interval 2s, auto cadences), plus one change of every
      event type, each waited for until delivered (its worst-case latency);
  (d) a full reconcile: total time and the watcher's own share versus waiting for MLflow;
  (e) the daemon's peak RSS (VmHWM) after its full scans in (c);
  (f) delivery throughput of a 5,000-event backlog to a local receiver answering 200 at once;
  (g) the whole command a cron user runs, `mlflow-watcher run --once` in a process of its own on
      an existing snapshot: wall time, split into waiting for MLflow and the watcher's own.

Prints a table per size and writes bench/results.json. `BENCH_PROFILE=DIR` also writes
cProfile reports of the full reconcile and of the drain into DIR. `BENCH_PARTS="g"` (any of
the letters above, default all) measures only those parts.
"""

from __future__ import annotations

import cProfile
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import platform
import pstats
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import naive
from bench.seed import create_schema, model_name, seed
from tests.e2e.harness import BIN, SECRET, Daemon, MlflowServer, Receiver, iter_lines, watcher_env
from watcher.config import Config, MlflowConfig, Secret, StateConfig, WatchConfig, WebhookConfig
from watcher.deliver import Deliverer
from watcher.detect import Policy, detect
from watcher.logs import configure, get_logger
from watcher.model import EventType, Observation, SnapshotDelta, make_delivery_id
from watcher.pipeline import CycleReport, Pipeline
from watcher.store import NewDelivery, Store

warnings.filterwarnings("ignore", category=FutureWarning)  # MLflow deprecates stages

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
MODELS = 1000
INTERVAL = 2.0
FIXED_CADENCE = 3600.0
"""(a) and (d): the full-scan cadences are pinned this long, so no steady cycle is a scan."""
STEADY_CYCLES = 20
CHANGE_CYCLES = 5
REPEATS = 3
"""Naive scans and full reconciles, each; the median is reported."""
TRANSITIONS = 24
PARTS = "abcdefg"
ONCE_TARGET_FROM = 100_000
"""(g)'s target applies from this size: below it, MLflow answers a whole read in about as long
as Python takes to start and import MLflow, so the ratio says little about the watcher."""
BACKLOG = 5000
TARGETS = {
    "steady_requests": 3,
    "speedup": 50.0,
    "latency_p99_s": INTERVAL + 1.0,
    "reconcile_inside_share": 0.25,
    "once_own_share": 0.25,
    "peak_rss_mb": 400.0,
    "throughput_eps": 200.0,
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def config_for(url: str, state: Path, hook: str, *, fixed_cadences: bool) -> Config:
    cadence = FIXED_CADENCE if fixed_cadences else None
    return Config(
        mlflow=MlflowConfig(tracking_uri=url, timeout=60.0),
        watch=WatchConfig(
            interval=INTERVAL, models_scan_interval=cadence, versions_scan_interval=cadence
        ),
        state=StateConfig(path=state),
        webhooks=(
            WebhookConfig(
                name="bench", url=hook, secret=Secret(SECRET, "bench"), signature="mlflow"
            ),
        ),
    )


def watcher_toml(
    path: Path, url: str, state: Path, hook: str, *, watch: str = "", webhook: str = ""
) -> Path:
    """A config file as a user writes one for `mlflow-watcher run`: JSON logs, one webhook."""
    path.write_text(
        f"""
[mlflow]
tracking_uri = "{url}"

[watch]
{watch}

[state]
path = "{state}"

[log]
format = "json"

[[webhooks]]
name = "bench"
url = "{hook}"
secret_env = "E2E_SECRET"
{webhook}
"""
    )
    return path


def timed_cycle(pipeline: Pipeline, *, full: bool = False) -> tuple[float, CycleReport]:
    started = time.monotonic()
    report = pipeline.run_cycle(full=full)
    wall = time.monotonic() - started
    if not report.ok:
        raise RuntimeError(f"cycle failed: {report.error}")
    return wall, report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def other_stage(current: str, wanted: str) -> str:
    return wanted if wanted != current else {"Staging": "Production"}.get(wanted, "Staging")


def read_db(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of a process, in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def profiled(target: Path | None, name: str, fn: Callable[[], Any]) -> Any:
    if target is None:
        return fn()
    profile = cProfile.Profile()
    result = profile.runcall(fn)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.txt"
    path.write_text(out.getvalue())
    say(f"profile written to {path}")
    return result


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


def reconcile(pipeline: Pipeline, profile_dir: Path | None, size: int) -> dict[str, Any]:
    """(d): full reads on top of the steady snapshot: none may find anything new."""
    runs = []
    for i in range(REPEATS):
        if i == 0:
            wall, report = profiled(
                profile_dir, f"reconcile-{size}", lambda: timed_cycle(pipeline, full=True)
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


def throughput(
    snapshot: Observation, workdir: Path, registry: str, profile_dir: Path | None, size: int
) -> dict[str, Any]:
    """(f): a backlog of BACKLOG real events (what emit_existing would send for the oldest
    versions of every model), the same number for every model (5 each over 1,000 models: 1,000
    lanes), drained to a receiver that answers 200 at once. Then the same events again with
    their model names rewritten onto 10 models (10 lanes), to show how the lane count matters."""
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
    result = drain_backlog(events, workdir / "throughput.db", profile_dir, f"drain-{size}")
    result["event_types"] = sorted({e.type.value for e in events})
    few = [
        dataclasses.replace(e, model_name=model_name(i % 10), event_id=uuid.uuid4().hex)
        for i, e in enumerate(events)
    ]
    result["ten_lanes"] = drain_backlog(few, workdir / "throughput-10.db", None, "")
    return result


def drain_backlog(
    events: list[Any], path: Path, profile_dir: Path | None, name: str
) -> dict[str, Any]:
    receiver = Receiver()
    receiver.start()
    store = Store.open(path)
    try:
        config = config_for("http://127.0.0.1:1", path, receiver.url, fixed_cadences=True)
        deliveries = [
            NewDelivery(make_delivery_id(e.event_id, "bench"), e.event_id, "bench", e.model_name)
            for e in events
        ]
        queued = store.commit_cycle(SnapshotDelta(), events, deliveries, {})
        deliverer = Deliverer(store, config, get_logger())
        started = time.monotonic()
        report = profiled(profile_dir, name, deliverer.drain)
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


# --------------------------------------------------------------------------- (g)


def whole_command(server: MlflowServer, workdir: Path, receiver_url: str) -> dict[str, Any]:
    """(g): `mlflow-watcher run --once` as cron runs it, a process of its own, on the snapshot
    a first (baseline) run left. Its wall time is split into waiting for MLflow (the run's own
    `poll.finished` line says how long its requests took) and the rest, the watcher's own:
    interpreter start-up, imports, loading the snapshot, reading the responses, comparing,
    committing, exiting. Each run's CPU time (user + system) is reported beside it: on a busy
    machine the wall time of the own part grows with the load, the CPU time much less."""
    config = watcher_toml(
        workdir / "once.toml", server.url, workdir / "once-state.db", receiver_url
    )
    args = ["run", "--once", "-v", "--config", str(config)]
    runtime = [str(runtime_install()), "-m", "watcher", *args]
    script = BIN / "mlflow-watcher"
    full = [str(script)] if script.exists() else [sys.executable, "-m", "watcher"]
    baseline = _once_run(runtime)
    if not baseline["baseline"]:
        raise RuntimeError("the first run --once did not record a baseline")
    say(f"run --once baseline: {baseline['wall_s']:.1f}s")
    result: dict[str, Any] = {"command": args, "baseline": baseline}
    for install, command in (("runtime", runtime), ("full_mlflow", [*full, *args])):
        runs = []
        for _ in range(REPEATS):
            run = _once_run(command)
            if run["baseline"] or run["events"] or run["read"] != "full":
                raise RuntimeError(f"a run --once on an unchanged registry: {run}")
            runs.append(run)
        middle = sorted(runs, key=lambda r: r["own_share"])[len(runs) // 2]
        result[install] = {"runs": runs, "median": middle}
    result["median"] = result["runtime"]["median"]
    return result


def runtime_install() -> Path:
    """The Python of a venv holding what a cron user installs (README, "Installing for real
    use"): the runtime dependencies at constraints.txt's pins, so mlflow-skinny, not the full
    mlflow package the tests need (pandas, fastapi: about 0.7 s more to import). Built once
    per pyproject.toml and constraints.txt under .bench-venvs/; the watcher itself runs from
    this checkout (PYTHONPATH), so the code measured is always the code here."""
    pins = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()
    venv = ROOT / ".bench-venvs" / f"runtime-{hashlib.sha256(pins).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        say(f"building the runtime install for (g) in {venv.relative_to(ROOT)} (once)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
        subprocess.run([*pip, str(ROOT)], check=True)
        (venv / ".installed").touch()
    return python


def _once_run(command: list[str]) -> dict[str, Any]:
    """One `run --once`, timed from the fork to the exit, its poll.finished line parsed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    env = watcher_env({"PYTHONPATH": str(ROOT)})  # this checkout's code, whichever install
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = list(iter_lines(done.stderr))
    finished = [line for line in lines if line.get("event") == "poll.finished"]
    if done.returncode != 0 or not finished or "mlflow_ms" not in finished[-1]:
        raise RuntimeError(f"run --once exited {done.returncode}: {done.stderr[-2000:]}")
    poll = finished[-1]
    mlflow_s = poll["mlflow_ms"] / 1000
    own = wall - mlflow_s
    return {
        "wall_s": round(wall, 3),
        "mlflow_s": round(mlflow_s, 3),
        "own_s": round(own, 3),
        "own_share": round(own / mlflow_s, 4),
        "cycle_s": round(poll["duration_ms"] / 1000, 3),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
        "requests": poll["requests"],
        "read": poll["read"],
        "events": poll["events"],
        "baseline": any(line.get("event") == "poll.baseline" for line in lines),
    }


# --------------------------------------------------------------------------- (c) (e)


@dataclass
class Expected:
    label: str
    event: str
    match: dict[str, Any]
    t0: float
    arrived: float | None = None
    extra: list[str] = field(default_factory=list)


def daemon_run(server: MlflowServer, workdir: Path, rng: random.Random) -> dict[str, Any]:
    """(c) and (e): the real daemon, changes made over REST, deliveries timed at arrival."""
    receiver = Receiver()
    receiver.start()
    config = watcher_toml(
        workdir / "daemon.toml",
        server.url,
        workdir / "daemon-state.db",
        receiver.url,
        watch=f'interval = "{INTERVAL:g}s"',
        # Every event by name: "*" leaves out the stage-specific transition events.
        webhook=f"events = {json.dumps([e.value for e in EventType])}",
    )
    daemon = Daemon(config, watcher_env())
    client = server.client()
    try:
        started = time.monotonic()
        daemon.start()
        daemon.wait_logged("poll.baseline", timeout=600)
        baseline_s = time.monotonic() - started
        rss_after_baseline = proc_status(_pid(daemon))
        say(f"daemon baseline after {baseline_s:.1f}s, RSS {rss_after_baseline}")
        time.sleep(INTERVAL)

        # Transitions go on, 0.5-3 s apart, until one change of every other kind has been
        # delivered: those wait for the full scans' cadences, so the transitions sample whole
        # cadence periods, scans included, not just the quiet minute after a baseline.
        changes: list[Expected] = []
        transitions: list[Expected] = []
        kinds = list(EVERY_KIND)
        free_models = iter(range(100, 900))  # one transition per model: no two within a poll
        deadline = time.monotonic() + _patience(daemon)
        last_note = 0.0
        while time.monotonic() < deadline:
            _match_arrivals(receiver, changes + transitions)
            if len(transitions) >= TRANSITIONS and not kinds and all(c.arrived for c in changes):
                break
            index = next(free_models, None)
            if index is None:
                break
            transitions.append(_transition(client, model_name(index), len(transitions), changes))
            if kinds:
                changes.append(kinds.pop(0)(server, client))
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
        return {
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


Span = tuple[str, float, float]
"""A full scan: its kind, and when it started and ended (time.monotonic())."""


def _scan_spans(polls: list[dict[str, Any]], scans: list[dict[str, Any]]) -> list[Span]:
    """When each full scan ran, in time.monotonic(): a poll that scanned in its own time, or
    a background scan (from its scan.merged line: merged waited_ms after it finished)."""
    to_monotonic = time.monotonic() - time.time()
    spans: list[Span] = []
    for poll in polls:
        read = str(poll.get("read"))
        if read == "incremental" or "(background)" in read or "timestamp" not in poll:
            continue
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
    for delivery in receiver.deliveries():
        body = delivery.json
        for change in changes:
            if change.arrived is not None or body.get("event") != change.event:
                continue
            if delivery.at < change.t0:
                continue
            if all(body.get(k) == v for k, v in change.match.items()):
                change.arrived = delivery.at


def _now() -> float:
    return time.monotonic()


def _model_created(server: MlflowServer, client: Any) -> Expected:
    name = f"bench-new-{uuid.uuid4().hex[:8]}"
    t0 = _now()
    client.create_registered_model(name)
    return Expected("model created", "REGISTERED_MODEL_CREATED", {"model_name": name}, t0)


def _version_created(server: MlflowServer, client: Any) -> Expected:
    name = model_name(900)
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


def _version_deleted(server: MlflowServer, client: Any) -> Expected:
    name = model_name(901)
    version = _unaliased_version(server, name)
    t0 = _now()
    client.delete_model_version(name, version)
    match = {"model_name": name, "model_version": version}
    return Expected("version deleted", "MODEL_VERSION_DELETED", match, t0)


def _model_deleted(server: MlflowServer, client: Any) -> Expected:
    name = model_name(902)
    t0 = _now()
    client.delete_registered_model(name)
    return Expected("model deleted", "REGISTERED_MODEL_DELETED", {"model_name": name}, t0)


def _tag_set(server: MlflowServer, client: Any) -> Expected:
    name = model_name(903)
    version = _unaliased_version(server, name)
    t0 = _now()
    client.set_model_version_tag(name, version, "bench_checked", "yes")
    match = {"model_name": name, "model_version": version, "tag_key": "bench_checked"}
    return Expected("version tag set", "MODEL_VERSION_TAG_SET", match, t0)


def _tag_deleted(server: MlflowServer, client: Any) -> Expected:
    rows = read_db(
        server.db,
        "SELECT name, version, key FROM model_version_tags WHERE name >= ? ORDER BY name LIMIT 1",
        (model_name(904),),
    )
    name, version, key = rows[0][0], str(rows[0][1]), rows[0][2]
    t0 = _now()
    client.delete_model_version_tag(name, version, key)
    match = {"model_name": name, "model_version": version, "tag_key": key}
    return Expected("version tag deleted", "MODEL_VERSION_TAG_DELETED", match, t0)


def _alias_set(server: MlflowServer, client: Any) -> Expected:
    name = model_name(905)
    version = _unaliased_version(server, name)
    t0 = _now()
    client.set_registered_model_alias(name, "bench-canary", version)
    match = {"model_name": name, "model_version": version, "alias": "bench-canary"}
    return Expected("alias set", "MODEL_VERSION_ALIAS_CREATED", match, t0)


def _alias_moved(server: MlflowServer, client: Any) -> Expected:
    name = model_name(906)
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


def _alias_deleted(server: MlflowServer, client: Any) -> Expected:
    name = model_name(907)
    t0 = _now()
    client.delete_registered_model_alias(name, "champion")
    match = {"model_name": name, "alias": "champion"}
    return Expected("alias deleted", "MODEL_VERSION_ALIAS_DELETED", match, t0)


EVERY_KIND: list[Callable[[MlflowServer, Any], Expected]] = [
    _model_created,
    _version_created,
    _version_deleted,
    _model_deleted,
    _tag_set,
    _tag_deleted,
    _alias_set,
    _alias_moved,
    _alias_deleted,
]
"""One change of every kind a stage transition does not make, one after each transition."""


# --------------------------------------------------------------------------- one size


def run_size(size: int, profile_dir: Path | None, parts: str = PARTS) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"mlflow-bench-{size}-"))
    server = MlflowServer(workdir / "mlflow")
    receiver = Receiver()
    rng = random.Random(size)
    result: dict[str, Any] = {"versions": size, "models": MODELS, "loadavg_start": os.getloadavg()}
    try:
        create_schema(server.db)
        seeded = seed(server.db, size, MODELS)
        say(f"seeded {seeded.versions} versions, {seeded.models} models: {seeded.seconds:.1f}s")
        result["seed"] = {
            "seconds": round(seeded.seconds, 2),
            "version_tags": seeded.version_tags,
            "model_tags": seeded.model_tags,
            "aliases": seeded.aliases,
        }
        started = time.monotonic()
        server.start(timeout=180)
        result["server_start_s"] = round(time.monotonic() - started, 2)
        receiver.start()
        in_process(result, server, workdir, receiver.url, profile_dir, parts)
        if "g" in parts:
            say("(g) the whole command: run --once on an existing snapshot")
            result["once"] = whole_command(server, workdir, receiver.url)
        if "c" in parts or "e" in parts:
            say("(c)+(e) the daemon: detection latency, every event type, peak RSS")
            result["daemon"] = daemon_run(server, workdir, rng)
    finally:
        receiver.stop()
        server.stop()
        if os.environ.get("BENCH_KEEP"):
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    result["verdicts"] = verdicts(result)
    return result


def in_process(
    result: dict[str, Any],
    server: MlflowServer,
    workdir: Path,
    hook: str,
    profile_dir: Path | None,
    parts: str,
) -> None:
    """(a), (b), (d) and (f), in this process; (d) and (f) start from a baseline, which (a)
    reads first when it is measured too."""
    if not set(parts) & set("abdf"):
        return
    size = result["versions"]
    client = server.client()
    state_path = workdir / "bench-state.db"
    store = Store.open(state_path)
    config = config_for(server.url, state_path, hook, fixed_cadences=True)
    pipeline = Pipeline(config, store, get_logger())
    try:
        if "a" in parts:
            say("(a) steady state")
            result["steady"] = steady_state(pipeline, client, server.db)
        elif set(parts) & set("df"):
            timed_cycle(pipeline)
        if "b" in parts:
            say("(b) naive poller")
            result["naive"] = naive_poller(client)
        if "d" in parts:
            say("(d) full reconcile")
            result["reconcile"] = reconcile(pipeline, profile_dir, size)
        if "f" in parts:
            say("(f) delivery throughput")
            snapshot = store.load_snapshot()
            assert snapshot is not None
            result["throughput"] = throughput(
                snapshot, workdir, pipeline.registry, profile_dir, size
            )
    finally:
        store.close()


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    """Each target the measured parts bear on."""
    found: dict[str, bool] = {}
    if "steady" in r:
        steady = r["steady"]
        requests = max(steady["quiet"]["requests_max"], steady["one_change"]["requests_max"])
        found["steady_requests"] = requests <= TARGETS["steady_requests"]
        if "naive" in r:
            found["speedup"] = speedup(r) >= TARGETS["speedup"]
    if "daemon" in r:
        daemon = r["daemon"]
        found["latency_p99_s"] = (daemon["latency_p99_s"] or 1e9) <= TARGETS["latency_p99_s"]
        found["peak_rss_mb"] = daemon["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
        found["every_event_delivered"] = daemon["all_delivered"]
    if "reconcile" in r:
        share = r["reconcile"]["median"]["inside_share"]
        found["reconcile_inside_share"] = share <= TARGETS["reconcile_inside_share"]
    if "throughput" in r:
        found["throughput_eps"] = r["throughput"]["events_per_s"] >= TARGETS["throughput_eps"]
    if "once" in r and r["versions"] >= ONCE_TARGET_FROM:
        found["once_own_share"] = r["once"]["median"]["own_share"] <= TARGETS["once_own_share"]
    return found


def speedup(r: dict[str, Any]) -> float:
    return float(r["naive"]["wall_s_median"] / r["steady"]["quiet"]["wall_s_median"])


# --------------------------------------------------------------------------- output


Row = tuple[str, str, str, str]
OK = {True: "pass", False: "FAIL"}


def info(measure: str, value: str) -> Row:
    """A row that only reports: no target, no verdict."""
    return (measure, value, "", "")


def judged(measure: str, value: str, target: str, met: bool) -> Row:
    """A row measured against its target, with the verdict."""
    return (measure, value, target, OK[met])


def table(r: dict[str, Any]) -> str:
    rows: list[Row] = []
    if "steady" in r:
        rows += steady_rows(r)
    if "daemon" in r:
        rows += latency_rows(r["daemon"], r["verdicts"])
    if "reconcile" in r:
        rows += reconcile_rows(r["reconcile"]["median"], r["verdicts"])
    if "once" in r:
        rows += once_rows(r["once"], r["verdicts"])
    if "daemon" in r:
        c = r["daemon"]
        rows.append(
            judged(
                "daemon peak RSS (VmHWM, after full scans)",
                f"{c['peak_rss_mb']:.0f} MB",
                f"<= {TARGETS['peak_rss_mb']:.0f} MB",
                r["verdicts"]["peak_rss_mb"],
            )
        )
    if "throughput" in r:
        rows += throughput_rows(r["throughput"], r["verdicts"])
    if "daemon" in r:
        rows += event_rows(r["daemon"], r["verdicts"])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    title = f"{r['versions']:,} versions over {r['models']:,} models"
    lines = [title, "-" * len(title)]
    header = ("measure", "value", "target", "")
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("-|-".join("-" * w for w in widths))
    lines += [
        " | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def steady_rows(r: dict[str, Any]) -> list[Row]:
    s, v, kb = r["steady"], r["verdicts"], 1024
    rows: list[Row] = [
        info(
            "steady cycle, no change: wall (median)", f"{s['quiet']['wall_s_median'] * 1000:.0f} ms"
        ),
        info(
            "steady cycle, one change: wall (median)",
            f"{s['one_change']['wall_s_median'] * 1000:.0f} ms",
        ),
        info(
            "steady cycle, no change: waiting for MLflow / watcher's own",
            f"{s['quiet']['mlflow_ms_median']:.0f} / "
            f"{s['quiet']['duration_ms_median'] - s['quiet']['mlflow_ms_median']:.0f} ms",
        ),
        judged(
            "steady cycle: requests (max, no change / one change)",
            f"{s['quiet']['requests_max']} / {s['one_change']['requests_max']}",
            f"<= {TARGETS['steady_requests']}",
            v["steady_requests"],
        ),
        info(
            "steady cycle: bytes read (median, no change / one change)",
            f"{s['quiet']['bytes_median'] / kb:.0f} / "
            f"{s['one_change']['bytes_median'] / kb:.0f} KiB",
        ),
    ]
    if "naive" in r:
        n = r["naive"]
        rows += [
            info(
                f"naive full scan (MlflowClient, page {n['page_size']}): wall (median)",
                f"{n['wall_s_median']:.2f} s, {n['requests']} requests",
            ),
            judged(
                "naive / steady wall time",
                f"{speedup(r):.0f}x",
                f">= {TARGETS['speedup']:.0f}x",
                v["speedup"],
            ),
        ]
    return rows


def latency_rows(c: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        judged(
            f"stage transition -> webhook, p50 / p99 (n={c['transitions_delivered']})",
            f"{c['latency_p50_s']} / {c['latency_p99_s']} s",
            f"p99 <= {TARGETS['latency_p99_s']:g} s",
            v["latency_p99_s"],
        ),
        info(
            "  transitions made while a full scan ran: n, max latency",
            f"{c['transitions_during_scans']}, "
            + (f"{max(c['latencies_during_scans_s'])} s" if c["latencies_during_scans_s"] else "-"),
        ),
        info(
            "  full scans after the baseline: kind, duration",
            scan_summary(
                c["scans_ms"][1:]
                if c["scans_ms"][:1] and c["scans_ms"][0][0] == "full"
                else c["scans_ms"]
            ),
        ),
        info(
            "  polls with or merging a scan: kind, duration", scan_summary(c["scan_polls_ms"][1:])
        ),
        info("  slowest poll", f"{c['slowest_poll_ms'] / 1000:.2f} s"),
    ]


def reconcile_rows(d: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        info(
            "full reconcile: total / waiting for MLflow",
            f"{d['duration_ms'] / 1000:.2f} / {d['mlflow_ms'] / 1000:.2f} s",
        ),
        judged(
            "full reconcile: watcher time / MLflow time",
            f"{d['inside_share'] * 100:.1f}%",
            f"<= {TARGETS['reconcile_inside_share'] * 100:.0f}%",
            v["reconcile_inside_share"],
        ),
    ]


def once_rows(once: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    o, full = once["median"], once.get("full_mlflow", {}).get("median")
    return [
        info(
            "run --once, whole command: wall / waiting for MLflow / own",
            f"{o['wall_s']:.2f} / {o['mlflow_s']:.2f} / {o['own_s']:.2f} s"
            f" (CPU {o['cpu_s']:.2f} s)",
        ),
        *(
            []
            if full is None
            else [
                info(
                    "  the same with the full mlflow package: own / MLflow",
                    f"{full['own_s']:.2f} / {full['mlflow_s']:.2f} s:"
                    f" {full['own_share'] * 100:.1f}%",
                )
            ]
        ),
        (
            "run --once: watcher's own time / MLflow time",
            f"{o['own_share'] * 100:.1f}%",
            f"<= {TARGETS['once_own_share'] * 100:.0f}%"
            + ("" if "once_own_share" in v else f" at {ONCE_TARGET_FROM // 1000}k"),
            OK[v["once_own_share"]] if "once_own_share" in v else "",
        ),
    ]


def throughput_rows(t: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        judged(
            f"delivery throughput, backlog {t['backlog']} on {t['lanes']} lanes",
            f"{t['events_per_s']:.0f} events/s",
            f">= {TARGETS['throughput_eps']:.0f}/s",
            v["throughput_eps"],
        ),
        info(
            f"  the same backlog on {t['ten_lanes']['lanes']} lanes",
            f"{t['ten_lanes']['events_per_s']:.0f} events/s",
        ),
    ]


def event_rows(c: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    rows: list[Row] = [
        judged(
            "every event type delivered",
            "yes" if c["all_delivered"] else "NO: " + ", ".join(c["undelivered"]),
            "all",
            v["every_event_delivered"],
        )
    ]
    for label, worst in c["worst_latency_by_change_s"].items():
        if label != "stage transition":
            rows.append(
                (f"  worst latency: {label}", "-" if worst is None else f"{worst} s", "", "")
            )
    return rows


def scan_summary(polls: list[list[Any]]) -> str:
    """ "incremental+models x6 (max 1.2 s), ..." from [kind, duration_ms] pairs."""
    kinds: dict[str, list[float]] = {}
    for kind, ms in polls:
        kinds.setdefault(str(kind), []).append(float(ms) / 1000)
    return ", ".join(f"{k} x{len(v)} (max {max(v):.1f} s)" for k, v in sorted(kinds.items())) or "-"


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_mb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "mlflow": metadata.version("mlflow"),
        "watcher_commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.replace(",", " ").split():
        part = part.strip().lower()
        sizes.append(int(float(part[:-1]) * 1000) if part.endswith("k") else int(part))
    return sizes


def main() -> int:
    configure(level="warning", fmt="console")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    sizes = parse_sizes(os.environ.get("BENCH_SIZES", "10000 100000"))
    profile_dir = Path(os.environ["BENCH_PROFILE"]) if os.environ.get("BENCH_PROFILE") else None
    parts = "".join(sorted(set(os.environ.get("BENCH_PARTS", PARTS).lower()) & set(PARTS)))
    if not parts:
        say(f"BENCH_PARTS names none of the parts {PARTS}")
        return 2
    info = machine()
    say(f"machine: {info}")
    results: dict[str, Any] = {
        "machine": info,
        "targets": TARGETS,
        "settings": {
            "models": MODELS,
            "interval_s": INTERVAL,
            "steady_cycles": STEADY_CYCLES,
            "change_cycles": CHANGE_CYCLES,
            "repeats": REPEATS,
            "transitions": TRANSITIONS,
            "backlog": BACKLOG,
            "naive_page_size": naive.PAGE_SIZE,
            "steady_and_reconcile_cadences_s": FIXED_CADENCE,
            "daemon_cadences": "auto",
            "parts": parts,
        },
        "sizes": {},
    }
    started = time.monotonic()
    tables = []
    for size in sizes:
        say(f"=== {size:,} versions ===")
        result = run_size(size, profile_dir, parts)
        results["sizes"][str(size)] = result
        tables.append(table(result))
        print(tables[-1] + "\n", flush=True)
    results["total_s"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    say(f"done in {results['total_s']:.0f}s; results in {RESULTS.relative_to(ROOT)}")
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), {info['memory_mb']} MB, "
        f"Python {info['python']}, MLflow {info['mlflow']}, {info['date']}"
    )
    return 0 if all(all(r["verdicts"].values()) for r in results["sizes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
