"""(g): the whole command a cron user runs, `mlflow-watcher run --once`, in a process of its own."""

from __future__ import annotations

import hashlib
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPEATS, ROOT, say, watcher_toml
from tests.e2e.harness import BIN, MlflowServer, iter_lines, watcher_env

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
