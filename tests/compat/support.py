"""The version matrix's parts: venvs of other MLflow versions, their clients, the watcher's runs.

Each old MLflow (2.9, 2.22) gets a virtual environment of its own, built from a pinned
requirements file the first time it is needed and reused afterwards: the folder's name carries a
hash of the requirements and of the interpreter, so a changed pin builds a new one (and the
stale one is removed). The newest MLflow 3 is the project's own venv. The watcher always runs
from the project venv, with the client version the project pins.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import BIN, MlflowServer, Receiver, Steps, write_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("WATCHER_COMPAT_VENVS") or ROOT / ".compat-venvs")
"""Where the venvs live (gitignored). WATCHER_COMPAT_VENVS moves it, e.g. to a CI cache."""
AGENT = HERE / "agent.py"
OLD_VERSIONS = ("2.9", "2.22")
"""MLflow versions that get a venv of their own; "3" is the project's venv."""


# --------------------------------------------------------------------------- venvs


def _base_python() -> str:
    """The interpreter new venvs are made with: python3.11, the version the pins are for."""
    return shutil.which("python3.11") or str(getattr(sys, "_base_executable", sys.executable))


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_", "WATCHER_"))
    }


@contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder at a time, also across concurrent test runs on one machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _key(requirements: Path, python: str) -> str:
    identity = subprocess.run(
        [python, "-c", "import sys, platform; print(sys.version, platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return hashlib.sha256(requirements.read_bytes() + identity.encode()).hexdigest()[:12]


def _pip(args: list[str], log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=_clean_env())
    if done.returncode != 0:
        tail = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "is ignored: it is neither a file nor a directory" not in line
        ][-30:]
        raise RuntimeError(f"{' '.join(args[:4])} ... failed:\n" + "\n".join(tail))


def _build(name: str, requirements: Path, make: Any) -> Path:
    """The folder CACHE/<name>-<hash>, made by make(folder, log) unless already complete."""
    key = _key(requirements, _base_python())
    target = CACHE / f"{name}-{key}"
    stamp = target / ".complete"
    if stamp.exists():
        return target
    with _cache_lock():
        if stamp.exists():
            return target
        for stale in CACHE.glob(f"{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        target.mkdir(parents=True)
        log = target / "build.log"
        make(target, log)
        stamp.write_text(f"built in {time.monotonic() - started:.1f}s from {requirements.name}\n")
    return target


@functools.cache
def venv_python(version: str) -> Path:
    """The interpreter of the venv holding MLflow `version` ("2.9", "2.22"), built if needed."""
    requirements = HERE / f"requirements-{version}.txt"

    def make(target: Path, log: Path) -> None:
        subprocess.run([_base_python(), "-m", "venv", str(target)], check=True)
        _pip(
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
            log,
        )

    return _build(f"mlflow-{version}", requirements, make) / "bin" / "python"


@functools.cache
def auth_overlay() -> Path:
    """A folder holding what mlflow[auth] adds to the project's MLflow (for PYTHONPATH)."""
    requirements = HERE / "requirements-auth.txt"

    def make(target: Path, log: Path) -> None:
        _pip(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target / "site"),
                "-r",
                str(requirements),
            ],
            log,
        )

    return _build("auth-extra", requirements, make) / "site"


def python_for(version: str) -> Path:
    """The interpreter whose MLflow is `version`: an old version's venv, or the project's."""
    return Path(sys.executable) if version == "3" else venv_python(version)


# --------------------------------------------------------------------------- clients


class AgentError(RuntimeError):
    pass


class Agent:
    """An MLflow client of another venv, in a process of its own (see agent.py).

    ``agent.set_registered_model_alias(name, "champion", "1")`` calls that method on the
    venv's MlflowClient and returns a plain JSON form of the result.
    """

    def __init__(
        self, python: Path, tracking_uri: str, workdir: Path, env: Mapping[str, str] = {}
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = (workdir / "agent.log").open("ab")
        self._proc = subprocess.Popen(
            [str(python), str(AGENT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=workdir,
            env={**_clean_env(), "MLFLOW_TRACKING_URI": tracking_uri, **env},
        )
        self.mlflow_version = str(self._answer())

    def _answer(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise AgentError(f"the client agent exited ({self._proc.wait()}); see {self._log.name}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AgentError(answer["error"])
        return answer["result"]

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"call": method, "args": args, "kwargs": kwargs}) + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._log.close()


# --------------------------------------------------------------------------- registries


@dataclass
class Registry:
    """One registry under test: where the watcher reads it, and a client of its own version."""

    label: str
    """ "2.9", "2.22", "3" (servers) or "file" (the project's MLflow on a file store)."""
    tracking_uri: str
    client: Agent
    server: MlflowServer | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the watcher (credentials)."""

    @property
    def mlflow_version(self) -> str:
        return self.client.mlflow_version


def start_server(label: str, workdir: Path) -> Registry:
    """`mlflow server` of that version's venv (sqlite backend), and a client of the same."""
    python = python_for(label)
    server = MlflowServer(workdir, mlflow_bin=python.parent / "mlflow")
    server.start(timeout=120)
    try:
        client = Agent(python, server.url, workdir / "client")
    except BaseException:
        server.stop()
        raise
    return Registry(label, server.url, client, server)


def file_store(workdir: Path) -> Registry:
    """The project's MLflow on a file store: no server at all."""
    mlruns = workdir / "mlruns"
    uri = mlruns.as_uri()
    client = Agent(
        Path(sys.executable), uri, workdir / "client", {"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    return Registry("file", uri, client)


# --------------------------------------------------------------------------- the watcher

EVERY_EVENT = [
    "*",
    "MODEL_VERSION_TRANSITIONED_TO_STAGING",
    "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
]


def watcher_config(
    folder: Path, *, tracking_uri: str, webhook_url: str, models: str = "*", **options: Any
) -> Path:
    """folder/watcher.toml: a watcher of `models` (state in folder/state.db) that delivers every
    event, stage-specific ones too, and gives old servers more time; options are
    write_config's."""
    settings: dict[str, Any] = {
        "events": EVERY_EVENT,
        "mlflow_timeout": "10s",
        "webhook_timeout": "5s",
        **options,
    }
    return write_config(
        folder / "watcher.toml",
        tracking_uri=tracking_uri,
        webhook_url=webhook_url,
        state=folder / "state.db",
        models=models,
        **settings,
    )


def steps_in(
    folder: Path,
    tracking_uri: str,
    receiver: Receiver,
    env: Mapping[str, str] | None = None,
    models: str = "*",
) -> Steps:
    """Steps of a watcher_config in `folder`, run from there."""
    config = watcher_config(
        folder, tracking_uri=tracking_uri, webhook_url=receiver.url, models=models
    )
    return Steps(config, receiver, env, cwd=folder)


def project_mlflow() -> Path:
    return BIN / "mlflow"
