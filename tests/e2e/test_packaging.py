"""What `make dist` ships installs and runs on its own: the wheel in a fresh venv.

The fresh venv gets the wheel without its dependencies, and sees this venv's packages through
a path file: installing MLflow's client and the rest again would take a minute and the network
at every run, and the point is the wheel (its files, entry point and metadata), not pip's
resolver, which `make`'s own install exercises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    # Without PYTHONPATH: the fresh venv must find the watcher it installed, not a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=ROOT)
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert wheel.name.startswith(f"mlflow_registry_watcher-{project['version']}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    tops = {name.split("/")[0] for name in names}
    assert tops == {"watcher", f"mlflow_registry_watcher-{project['version']}.dist-info"}
    # The console's pages and stylesheet are package data: without them it answers 500s.
    console_files = {"templates/base.html", "templates/delivery.html", "static/console.css"}
    assert {f"watcher/console/{name}" for name in console_files} <= names

    env = tmp_path / "venv"
    venv.create(env)  # no pip of its own: this venv's installs into it
    python = env / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    (Path(site) / "project-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)

    elsewhere = tmp_path / "elsewhere"  # not the checkout: its watcher/ must not be imported
    elsewhere.mkdir()
    where = run(python, "-c", "import watcher; print(watcher.__file__)", cwd=elsewhere)
    assert where.startswith(site), where
    assert run(env / "bin" / "mlflow-watcher", "--version", cwd=elsewhere).split()[-1] == (
        version("mlflow-registry-watcher")
    )
    config = elsewhere / "watcher.toml"
    config.write_text(
        '[mlflow]\ntracking_uri = "http://127.0.0.1:9"\n'
        '[[webhooks]]\nname = "deploy"\nurl = "https://ci.example/hook"\n'
    )
    checked = run(env / "bin" / "mlflow-watcher", "check-config", "-c", config, cwd=elsewhere)
    assert "https://ci.example/hook" in checked
