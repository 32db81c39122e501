"""What every part of the benchmark shares: its settings and targets, the configs it writes,
and small helpers."""

from __future__ import annotations

import cProfile
import datetime
import io
import pstats
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import SECRET, Daemon
from watcher.config import Config, MlflowConfig, Secret, StateConfig, WatchConfig, WebhookConfig
from watcher.pipeline import CycleReport, Pipeline

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
PARTS = "abcdefghijk"
ONCE_TARGET_FROM = 100_000
"""(g)'s target applies from this size: below it, MLflow answers a whole read in about as long
as Python takes to start and import MLflow, so the ratio says little about the watcher."""
BACKLOG = 5000
STEADY = "steady"
"""The state (a) builds, which (d) and (h) go on from."""
TARGETS = {
    "steady_requests": 3,
    "speedup": 50.0,
    "latency_p99_s": INTERVAL + 1.0,
    "reconcile_inside_share": 0.25,
    "once_own_share": 0.25,
    "peak_rss_mb": 400.0,
    "throughput_eps": 200.0,
    "console_page_ms": 300.0,
    "hinted_p99_s": 2.0,
    "read_duty": 0.10,
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def config_for(url: str, state: Path, hook: str, *, fixed_cadences: bool) -> Config:
    cadence = FIXED_CADENCE if fixed_cadences else None
    return Config(
        mlflow=MlflowConfig(tracking_uri=url, timeout=60.0),
        watch=WatchConfig(
            interval=INTERVAL,
            models_scan_interval=cadence,
            versions_scan_interval=cadence,
            # (a) and (b) time the polls themselves, as before the hot set; (c) runs the
            # daemon as configured by default, hot set included.
            hot_window=0.0 if fixed_cadences else WatchConfig.hot_window,
        ),
        state=StateConfig(path=state),
        webhooks=(
            WebhookConfig(
                name="bench", url=hook, secret=Secret(SECRET, "bench"), signature="mlflow"
            ),
        ),
    )


def watcher_toml(
    path: Path,
    url: str,
    state: Path,
    hook: str,
    *,
    watch: str = "",
    webhook: str = "",
    extra: str = "",
) -> Path:
    """A config file as a user writes one for `mlflow-watcher run`: JSON logs, one webhook;
    ``extra`` holds any other tables."""
    path.write_text(
        f"""{extra}
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


def logged_at(line: dict[str, Any]) -> float:
    """When a daemon's JSON log line was written, on this process's time.monotonic() clock."""
    stamp = datetime.datetime.fromisoformat(str(line["timestamp"])).timestamp()
    return stamp + time.monotonic() - time.time()


def first_poll_after(daemon: Daemon, since: float) -> dict[str, Any] | None:
    """The daemon's first poll.finished line logged at or after ``since`` (monotonic)."""
    return next((p for p in daemon.logged("poll.finished") if logged_at(p) >= since), None)


@dataclass(frozen=True)
class Duty:
    """Where a daemon's time reading MLflow went after its baseline, from its log lines: the
    polls' (``mlflow_ms``: hot and hinted reads, and scans made within a poll, included), the
    hot set's (``hot_ms``), and the scans' (background ones from their ``scan.merged`` lines);
    over the wall time the polls after the baseline covered."""

    wall_s: float
    polls_s: float
    hot_s: float
    in_poll_scans_s: float
    scans_s: float

    @classmethod
    def of(cls, polls: list[dict[str, Any]], scans: list[dict[str, Any]]) -> Duty:
        after = polls[1:]
        stamps = [
            datetime.datetime.fromisoformat(p["timestamp"]).timestamp()
            for p in after
            if "timestamp" in p
        ]
        in_poll_scans_s = sum(
            float(p.get("mlflow_ms", 0)) / 1000
            for p in after
            if {"full", "models", "versions"} & set(str(p.get("read")).split("+"))
        )
        return cls(
            wall_s=(max(stamps) - min(stamps) + INTERVAL) if stamps else 0.0,
            polls_s=sum(float(p.get("mlflow_ms", 0)) for p in after) / 1000,
            hot_s=sum(float(p.get("hot_ms", 0)) for p in after) / 1000,
            in_poll_scans_s=in_poll_scans_s,
            scans_s=sum(float(s.get("duration_ms", 0)) for s in scans) / 1000 + in_poll_scans_s,
        )

    @property
    def read_s(self) -> float:
        """Every second spent reading MLflow, each counted once."""
        return self.polls_s + self.scans_s - self.in_poll_scans_s

    def share(self, seconds: float) -> float | None:
        return round(seconds / self.wall_s, 3) if self.wall_s else None
