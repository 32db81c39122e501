"""(k): latency per kind of change with hints on. The real daemon (`mlflow-watcher run`,
interval 2 s, auto cadences, hot set off, so that the hints alone make the difference) serves
`[hints]` and has registered MLflow's native webhook on the seeded server with `hints register`;
ten changes of each kind are made over REST on models drawn across the registry, and each is
timed as (c) times them (with (c)'s change makers), from just before the REST call to the
webhook's arrival."""

from __future__ import annotations

import json
import random
import secrets
import time
from typing import Any

from bench.common import INTERVAL, Duty, logged_at, percentile, read_db, say, watcher_toml
from bench.daemon import (
    Change,
    Expected,
    _match_arrivals,
    _patience,
    _transition,
    alias_deleted,
    alias_moved,
    alias_set,
    model_created,
    tag_deleted,
    tag_set,
    version_created,
)
from bench.states import States
from tests.e2e.harness import Daemon, MlflowServer, Receiver, run_watcher
from tests.helpers import free_port
from watcher.model import EventType

PER_KIND = 10
HOOK_NAME = "mlflow-watcher-hints"
TRANSITION = "stage transition"
KINDS: list[Change] = [
    alias_set,
    alias_moved,
    alias_deleted,
    tag_set,
    tag_deleted,
    model_created,
    version_created,
]
"""The kinds MLflow sends a native event for, each a hint; stage transitions have none."""
HINTED = {
    "alias set",
    "alias moved",
    "alias deleted",
    "version tag set",
    "version tag deleted",
    "model created",
    "version created",
}
"""Their labels (``Expected.label``): the kinds the target of 2 s applies to."""


def hints_run(
    server: MlflowServer, states: States, rng: random.Random, slot: int = 0
) -> dict[str, Any]:
    """(k) on one backend: the daemon with hints, the changes in a random order 0.5-3 s
    apart (spread over one versions-scan cadence at least), then until a versions scan has
    come round, so that the read duty covers the scans."""
    receiver = Receiver()
    receiver.start()
    port = free_port()
    config = watcher_toml(
        states.workdir / f"hints-{states.name}.toml",
        server.url,
        states.path(f"hints-{slot}"),
        receiver.url,
        watch=f'interval = "{INTERVAL:g}s"\nhot_window = "off"',
        webhook=f"events = {json.dumps([e.value for e in EventType])}",
        extra=f'[server]\nlisten = "127.0.0.1:{port}"\n\n[hints]\nsecret_env = "BENCH_HINTS"\n',
    )
    env = {**states.env(f"hints-{slot}"), "BENCH_HINTS": secrets.token_urlsafe(24)}
    daemon = Daemon(config, env)
    client = server.client()
    hook: str | None = None
    changes: list[Expected] = []
    try:
        started = time.monotonic()
        daemon.start()
        daemon.wait_logged("poll.baseline", timeout=600)
        baseline_s = time.monotonic() - started
        url = f"http://127.0.0.1:{port}/mlflow-hints"
        done = run_watcher("hints", "register", "-c", str(config), "--url", url, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"hints register failed: {done.stderr.strip()}")
        hook = next(w.webhook_id for w in client.list_webhooks() if w.name == HOOK_NAME)
        plan = _plan(server, rng)
        stretch = max(1.0, _versions_cadence(daemon) / (len(plan) * 1.75))
        say(f"daemon baseline after {baseline_s:.1f}s; {len(plan)} changes, gaps x{stretch:.1f}")
        for index, (change, name) in enumerate(plan):
            if change is None:
                changes.append(_transition(client, name, index, []))
            else:
                changes.append(change(server, client, name))
            _match_arrivals(receiver, changes)
            time.sleep(rng.uniform(0.5, 3.0) * stretch)
        # Until every change has arrived and a versions scan has come round after the last, so
        # that the read duty covers whole versions-scan cadences (at 100k versions a scan comes
        # every few minutes and takes seconds).
        last = time.monotonic()
        deadline = last + _patience(daemon)
        while time.monotonic() < deadline and not (
            all(c.arrived for c in changes) and _versions_scanned(daemon, last)
        ):
            time.sleep(0.25)
            _match_arrivals(receiver, changes)
        return _report(daemon, changes, baseline_s)
    finally:
        # What the daemon logged, and each change, for a look after a run with BENCH_KEEP=1.
        with (states.workdir / f"hints-{states.name}.jsonl").open("w") as out:
            for line in [*daemon.lines, *({"change": c.__dict__} for c in changes)]:
                out.write(json.dumps(line, default=str) + "\n")
        if hook is not None:  # the server goes on serving the next parts and backends
            client.delete_webhook(hook)
        if daemon.alive():
            daemon.terminate()
        receiver.stop()


Planned = tuple[Change | None, str]
"""A change of one kind (None: a stage transition) and the model it is made on."""


def _plan(server: MlflowServer, rng: random.Random) -> list[Planned]:
    """PER_KIND changes of each kind and as many transitions, shuffled, each on a model of its
    own drawn from every seeded model that has what each kind needs (a champion alias, a
    version 1 and a version tag, no deleted version): not only the recent ones."""
    pool = [
        str(row[0])
        for row in read_db(
            server.db,
            "SELECT m.name FROM registered_models m WHERE m.name LIKE 'bench-model-%'"
            " AND EXISTS (SELECT 1 FROM registered_model_aliases a"
            "  WHERE a.name = m.name AND a.alias = 'champion')"
            " AND EXISTS (SELECT 1 FROM model_versions v"
            "  WHERE v.name = m.name AND v.version = 1)"
            " AND EXISTS (SELECT 1 FROM model_version_tags t WHERE t.name = m.name)"
            " AND NOT EXISTS (SELECT 1 FROM model_versions d"
            "  WHERE d.name = m.name AND d.current_stage = 'Deleted_Internal')"
            " ORDER BY m.name",
        )
    ]
    kinds: list[Change | None] = [*KINDS, None]
    planned = [kind for kind in kinds for _ in range(PER_KIND)]
    rng.shuffle(planned)
    return list(zip(planned, rng.sample(pool, len(planned)), strict=True))


def _versions_polls(polls: list[dict[str, Any]]) -> list[int]:
    """The indexes of the polls after the baseline that scanned the versions or merged a scan
    of them."""
    return [i for i, p in enumerate(polls) if i and "versions" in str(p.get("read"))]


def _versions_scanned(daemon: Daemon, since: float) -> bool:
    """A versions scan after the baseline logged at or after ``since``."""
    polls = daemon.logged("poll.finished")
    marks = _versions_polls(polls)
    return bool(marks) and logged_at(polls[marks[-1]]) >= since


def _duty(daemon: Daemon) -> tuple[Duty, list[dict[str, Any]]]:
    """The read duty over the polls from the baseline (a full read: it opens the window and
    is not counted) to the last versions scan (whole versions-scan cadences, each with its
    scan), or to the last poll without one; and the polls counted."""
    polls = daemon.logged("poll.finished")
    marks = _versions_polls(polls)
    if marks:
        polls = polls[: marks[-1] + 1]
    start, end = logged_at(polls[0]), logged_at(polls[-1])
    scans = [s for s in daemon.logged("scan.merged") if start < logged_at(s) <= end]
    return Duty.of(polls, scans), polls[1:]


def _versions_cadence(daemon: Daemon) -> float:
    logged = daemon.logged("poll.cadence")
    return float(logged[-1].get("versions_scan_every_s", 0)) if logged else 0.0


def _report(daemon: Daemon, changes: list[Expected], baseline_s: float) -> dict[str, Any]:
    """Per kind: n, p50, p99, worst, and every latency; the read duty; how the hints did."""
    duty, counted = _duty(daemon)
    cadences = daemon.logged("poll.cadence")
    kinds = latency_by_kind(changes, HINTED | {TRANSITION})
    reads: dict[str, int] = {}
    for poll in daemon.logged("poll.finished")[1:]:
        reads[str(poll.get("read"))] = reads.get(str(poll.get("read")), 0) + 1
    woken = [p for p in counted if "hinted" in str(p.get("read")).split("+")]
    # A poll that also scanned in its own time counts with the scans (Duty).
    woken = [p for p in woken if not {"full", "models", "versions"} & set(p["read"].split("+"))]
    woken_ms = [float(p.get("mlflow_ms", 0)) for p in woken]
    woken_s = sum(woken_ms) / 1000
    result = {
        "interval_s": INTERVAL,
        "baseline_s": round(baseline_s, 2),
        "kinds": kinds,
        "undelivered": sorted({c.label for c in changes if c.arrived is None}),
        "read_duty": duty.share(duty.read_s),
        # What max_duty governs, as (c)'s duty_budgeted: the scans and the polls hints started.
        "duty_budgeted": duty.share(duty.scans_s + woken_s),
        "duty_scans": duty.share(duty.scans_s),
        "duty_hinted_polls": duty.share(woken_s),
        "duty_other_polls": duty.share(duty.read_s - duty.scans_s - woken_s),
        "wall_s": round(duty.wall_s, 1),
        "hints_accepted": len(daemon.logged("hint.accepted")),
        "hints_refused": len(daemon.logged("hint.refused")),
        "polls": len(counted),
        "hinted_polls": len(woken),
        "hinted_poll_reading_ms_median": round(percentile(woken_ms, 0.5)) if woken else None,
        "reads": reads,
        "cadences": {
            k: v for k, v in (cadences[-1] if cadences else {}).items() if k.endswith("_s")
        },
    }
    say(f"hints: {json.dumps({k: v for k, v in result.items() if k != 'kinds'})}")
    return result


def latency_by_kind(changes: list[Expected], labels: set[str]) -> dict[str, dict[str, Any]]:
    """n (delivered), p50, p99, worst and every latency of the changes of each label."""
    by_kind: dict[str, list[float]] = {label: [] for label in labels}
    for c in changes:
        if c.label in labels and c.arrived is not None:
            by_kind[c.label].append(c.arrived - c.t0)
    return {
        label: {
            "n": len(values),
            "p50_s": round(percentile(values, 0.5), 2) if values else None,
            "p99_s": round(percentile(values, 0.99), 2) if values else None,
            "worst_s": round(max(values), 2) if values else None,
            "latencies_s": [round(v, 2) for v in values],
        }
        for label, values in sorted(by_kind.items())
    }
