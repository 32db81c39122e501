"""The benchmark of issues #5 and #12: `make bench` (or `python -m bench.run`) from the root.

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
      an existing snapshot: wall time, split into waiting for MLflow and the watcher's own;
  (h) delivery throughput of the same backlog through the running daemon, which polls meanwhile;
  (i) a restart (stop, a transition, start), and on PostgreSQL a failover (kill -9 of the leader
      of two replicas) and a handover (SIGTERM), each timed to the delivery of a transition made
      meanwhile, the new process's or new leader's first poll checked to be incremental;
  (j) the delivery console on a log of N deliveries (`mlflow-watcher console`): each page's
      median, p95 and worst answer time over HTTP, the deliveries page filtered every way;
  (k) latency per kind of change with hints on (MLflow's native webhooks, registered with
      `hints register`, hot set off): ten of each kind on models across the registry, p99 and
      worst, and the read duty.

Every part that keeps a state runs on each backend `BENCH_STATES` names ("sqlite postgresql",
the default; PostgreSQL in a private cluster this run starts), (b) and (g) once. Prints a
table per size, a column per backend, and writes bench/results.json. `BENCH_PROFILE=DIR` also
writes cProfile reports of the full reconcile and of the drain into DIR. `BENCH_PARTS="g"`
(any of the letters above, default all) measures only those parts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import naive
from bench.backlog import daemon_drain
from bench.common import (
    BACKLOG,
    CHANGE_CYCLES,
    FIXED_CADENCE,
    INTERVAL,
    MODELS,
    PARTS,
    REPEATS,
    RESULTS,
    ROOT,
    STEADY_CYCLES,
    TARGETS,
    TRANSITIONS,
    say,
)
from bench.console import console_pages
from bench.daemon import daemon_run
from bench.hints import hints_run
from bench.inprocess import in_process, naive_poller
from bench.once import whole_command
from bench.replicas import FAILOVER_BOUNDS, RESTART_INTERVAL, replicas
from bench.report import machine, table, verdicts
from bench.seed import create_schema, seed
from bench.states import NAMES, Backends, States, parse_states
from tests.e2e.harness import MlflowServer, Receiver
from watcher.logs import configure

# --------------------------------------------------------------------------- one size


def run_size(size: int, profile_dir: Path | None, parts: str, backends: Backends) -> dict[str, Any]:
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
        if "b" in parts:
            say("(b) naive poller")
            result["naive"] = naive_poller(server.client())
        result["states"] = {}
        for slot, name in enumerate(backends.names):
            states = backends.for_size(name, workdir)
            result["states"][name] = one_backend(
                Bench(server, receiver.url, size, parts, profile_dir), states, rng, slot
            )
        if "g" in parts:
            say("(g) the whole command: run --once on an existing snapshot")
            result["once"] = whole_command(server, workdir, receiver.url)
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


@dataclass(frozen=True)
class Bench:
    """What every backend of one size is measured against."""

    server: MlflowServer
    hook: str
    size: int
    parts: str
    profile_dir: Path | None


def one_backend(bench: Bench, states: States, rng: random.Random, slot: int) -> dict[str, Any]:
    """Every part that runs on a state, on one backend: (a), (d), (f) in process, then the
    daemon's (h), (c)+(e) and (i), the console's (j), and the daemon with hints, (k)."""
    server, parts = bench.server, bench.parts
    result: dict[str, Any] = {}
    in_process(result, server, states, bench.hook, bench.profile_dir, bench.size, parts)
    if "h" in parts and "daemon_backlog" in result:
        say(f"(h) delivery throughput through the daemon, {states.name}")
        result["daemon_drain"] = daemon_drain(server, states, result["daemon_backlog"])
    if "c" in parts or "e" in parts:
        say(f"(c)+(e) the daemon on {states.name}: detection latency, every event type, RSS")
        result["daemon"] = daemon_run(server, states, rng, slot)
    if "i" in parts:
        say(f"(i) restart{' and failover' if states.name == 'postgresql' else ''}, {states.name}")
        result["replicas"] = replicas(server, states)
    if "j" in parts:
        say(f"(j) the delivery console on {bench.size:,} deliveries, {states.name}")
        result["console"] = console_pages(states, bench.size)
    if "k" in parts:
        say(f"(k) latency per change kind with hints on, {states.name}")
        result["hints"] = hints_run(server, states, rng, slot)
    return result


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
    names = parse_states(os.environ.get("BENCH_STATES", " ".join(NAMES)))
    if not names:
        say(f"BENCH_STATES names none of the backends {NAMES}")
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
            "states": names,
            "restart_interval_s": RESTART_INTERVAL,
            "failover_bounds_s": FAILOVER_BOUNDS,
        },
        "sizes": {},
    }
    started = time.monotonic()
    backends = Backends(names)
    try:
        for size in sizes:
            say(f"=== {size:,} versions ===")
            result = run_size(size, profile_dir, parts, backends)
            results["sizes"][str(size)] = result
            print(table(result) + "\n", flush=True)
    finally:
        backends.close()
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
