"""Real parts for end-to-end tests: an `mlflow server` process and an HTTP receiver.

Nothing here is a mock: the server is MLflow's own, started on 127.0.0.1 with a sqlite backend,
and the receiver is a real HTTP server that the watcher reaches over TCP.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.helpers import free_port as free_port  # the e2e tests import it from here

BIN = Path(sys.executable).parent

NATIVE_WEBHOOKS_ENV = {
    # MLflow 3.3+ sends its native webhooks only to https:// and public addresses by default;
    # tests/e2e/native.py points one at a Receiver on http://127.0.0.1.
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    # The server caches the webhooks of each event type for 60 s: a webhook a test registers
    # would miss the changes made in the minute after an earlier test's change of that type.
    "MLFLOW_WEBHOOK_CACHE_TTL": "0",
}
"""What an MLflow server needs to send its native webhooks to a receiver on loopback http."""
STAGE_EVENT = "MODEL_VERSION_TRANSITIONED_STAGE"


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class MlflowServer:
    """`mlflow server` with a sqlite backend, in its own process group."""

    def __init__(
        self, workdir: Path, port: int | None = None, mlflow_bin: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.mlflow_bin = mlflow_bin or BIN / "mlflow"
        """The `mlflow` command to run: this interpreter's by default, another venv's for the
        version matrix (tests/compat)."""
        self.db = workdir / "mlflow.db"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_uri(self) -> str:
        return f"sqlite:///{self.db}"

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **NATIVE_WEBHOOKS_ENV}
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.mlflow_bin),
                "server",
                "--backend-store-uri",
                self.db_uri,
                "--default-artifact-root",
                str(self.workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n{tail}")
            try:
                return requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout, "mlflow server /health", interval=0.25)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


class _QuietServer(ThreadingHTTPServer):
    """A server that says nothing when a client goes away mid-answer (a sender killed with
    kill -9 while its request was answered)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class LocalService:
    """An HTTP server of the tests on 127.0.0.1 (over TLS when given a context), serving
    handler() in daemon threads.

    ``stop()`` closes the socket (a client then gets "connection refused"); ``start()``
    listens again on the same port.
    """

    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> None:
        self._server = _QuietServer(("127.0.0.1", self.port), self.handler())
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    """The status the receiver answered with (0: it closed the connection instead)."""
    at: float = 0.0
    """time.monotonic() when the request arrived."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class ReceiverBehaviour:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    """Close the connection without an answer."""
    body: bytes = b"ok"
    """What the answer says (any status)."""
    hold: threading.Event | None = None
    """Answer only once this is set (or after a minute): the sender waits as long as a test
    wants, whatever the machine's load."""


class Receiver(LocalService):
    """A real HTTP receiver that records every request and answers as told."""

    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(port, tls)
        self.behaviour = ReceiverBehaviour()
        self.choose: Callable[[str], ReceiverBehaviour] | None = None
        """When set, picks the behaviour for each request (from its path)."""
        self.received: list[Delivery] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died between its headers and its body (kill -9): no request
                    # arrived whole, as any HTTP framework would see it.
                    self.close_connection = True
                    return
                behaviour = receiver.choose(self.path) if receiver.choose else receiver.behaviour
                answered = 0 if behaviour.reset else behaviour.status
                with receiver._lock:
                    receiver.received.append(
                        Delivery(
                            self.path, dict(self.headers.items()), body, answered, time.monotonic()
                        )
                    )
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                if behaviour.hold is not None:
                    behaviour.hold.wait(timeout=60)
                if behaviour.reset:
                    self.close_connection = True
                    return
                self.send_response(behaviour.status)
                for key, value in behaviour.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(behaviour.body)))
                self.end_headers()
                self.wfile.write(behaviour.body)

        return Handler

    def deliveries(self, event: str | None = None) -> list[Delivery]:
        with self._lock:
            items = list(self.received)
        return [d for d in items if event is None or d.json.get("event") == event]

    def wait_for_count(self, count: int, timeout: float = 20, event: str | None = None) -> None:
        wait_for(lambda: len(self.deliveries(event)) >= count, timeout, f"{count} deliveries")


def write_config(
    path: Path,
    *,
    tracking_uri: str,
    webhook_url: str,
    state: Path,
    interval: str = "1s",
    models: str = "*",
    secret_env: str | None = "E2E_SECRET",
    extra: str = "",
    webhook_extra: str = "",
    webhook_timeout: str = "3s",
    events: Sequence[str] = (STAGE_EVENT,),
    mlflow_timeout: str = "5s",
    watch_extra: str = "",
) -> Path:
    """A config of one webhook "deploy" on `webhook_url`, retrying fast, polling every second."""
    secret = f'secret_env = "{secret_env}"\n' if secret_env else ""
    path.write_text(
        f"""
[mlflow]
tracking_uri = "{tracking_uri}"
timeout = "{mlflow_timeout}"

[watch]
interval = "{interval}"
models = ["{models}"]
{watch_extra}
[state]
path = "{state}"

[delivery]
initial_delay = "200ms"
max_delay = "1s"
{extra}
[[webhooks]]
name = "deploy"
url = "{webhook_url}"
events = {json.dumps(list(events))}
timeout = "{webhook_timeout}"
{secret}{webhook_extra}
"""
    )
    return path


def toml_value(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and arrays are TOML's; a dict is an inline table."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def hooks_config(
    path: Path,
    *,
    tracking_uri: str,
    state: Path,
    models: str,
    webhooks: Sequence[Mapping[str, Any]],
    interval: str | None = None,
) -> Path:
    """A config of several webhooks, each given as its keys, and the defaults otherwise."""
    tables = "".join(
        "\n[[webhooks]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in hook.items())
        for hook in webhooks
    )
    path.write_text(
        f'[mlflow]\ntracking_uri = "{tracking_uri}"\n'
        + "[watch]\n"
        + (f'interval = "{interval}"\n' if interval else "")
        + f'models = ["{models}"]\n'
        f'[state]\npath = "{state}"\n' + tables
    )
    return path


SECRET = "e2e-secret-value-4f1c"


def watcher_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHER_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))
    }
    env["E2E_SECRET"] = SECRET
    env.update(extra or {})
    return env


def run_watcher(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        env=dict(env or watcher_env()),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Daemon:
    """`mlflow-watcher run` as a child process whose JSON log lines can be waited for."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(env or watcher_env())
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._starts = 0

    def start(self) -> None:
        self._starts = len(self.logged("service.started"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": "raw", "line": line.rstrip()}
            with self._lock:
                self.lines.append(record)

    def logged(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.lines if r.get("event") == event]

    def wait_logged(self, event: str, count: int = 1, timeout: float = 30) -> None:
        wait_for(lambda: len(self.logged(event)) >= count, timeout, f"{count}x log {event}")

    def polls(self) -> int:
        """How many polls finished so far (its `poll.finished` lines)."""
        return len(self.logged("poll.finished"))

    def wait_polls(
        self,
        count: int,
        *,
        reading: str | None = None,
        timeout: float = 30,
    ) -> None:
        """Until `count` more polls have finished from now: what "nothing more arrives" waits
        for, instead of a sleep. `reading`: count only the polls whose read included it
        ("models", "versions": a full scan of that kind)."""

        def wanted(line: dict[str, Any]) -> bool:
            # "incremental+models", "full", "incremental+versions(background)", ...
            kinds = {kind.split("(")[0] for kind in str(line.get("read", "")).split("+")}
            return reading is None or bool({reading, "full"} & kinds)

        seen = len(self.logged("poll.finished"))
        wait_for(
            lambda: sum(map(wanted, self.logged("poll.finished")[seen:])) >= count,
            timeout,
            f"{count} more polls" + (f" reading {reading}" if reading else ""),
        )

    def wait_started(self, timeout: float = 30) -> None:
        """Until the process that start() launched has its scheduler running."""
        self.wait_logged("service.started", count=self._starts + 1, timeout=timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_stopped(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Daemon:
        """``with Daemon(config) as daemon:`` starts it, and kills it after if the test has
        not stopped it (a failed assertion must not leave a daemon behind)."""
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.ensure_stopped()


def blocked_on_a_lock(pid: int) -> bool:
    """Whether process `pid` waits for a file lock (the kernel lists it in /proc/locks)."""
    return any(
        "->" in line and str(pid) in line.split()
        for line in Path("/proc/locks").read_text().splitlines()
    )


def iter_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            yield json.loads(line)


Row = tuple[Any, ...]


class Steps:
    """One change, one `run --once`, then exactly what the receiver got in that run."""

    def __init__(
        self,
        config: Path,
        receiver: Receiver,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.config = config
        self.receiver = receiver
        self.env = watcher_env(env)
        self.cwd = cwd
        self.seen = 0
        self.logged: list[dict[str, Any]] = []

    def run(self, *extra: str) -> list[dict[str, Any]]:
        result = run_watcher(
            "run", "--once", "--verbose", "-c", str(self.config), *extra, env=self.env, cwd=self.cwd
        )
        assert result.returncode == 0, result.stderr
        self.logged = list(iter_lines(result.stderr))
        new = self.receiver.deliveries()[self.seen :]
        self.seen += len(new)
        return [d.json for d in new]

    def last(self, event: str) -> dict[str, Any]:
        """The log line `event` of the last run."""
        return next(line for line in self.logged if line.get("event") == event)


def summary(events: list[dict[str, Any]], *fields: str) -> list[Row]:
    """(event, model, version, *fields) of each event, sorted: what a step is compared by."""
    return sorted(
        tuple([e["event"], e["model_name"], e.get("model_version"), *(e.get(f) for f in fields)])
        for e in events
    )
