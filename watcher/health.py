"""The health and metrics HTTP server: /healthz, /readyz and /metrics, on a daemon thread;
with ``[hints]``, also ``POST [hints] path`` for MLflow's native webhooks (watcher.hints).

The standard library's threading HTTP server is enough for a probe every few seconds and a
scrape every few more; it adds no dependency and stops with the process.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from watcher.config import ServerConfig
from watcher.errors import ConfigError, WatcherError
from watcher.hints import MAX_BODY, HintBox, Verdict
from watcher.metrics import Metrics
from watcher.signing import bearer_token, same_secret

Probe = Callable[[], tuple[bool, str]]
"""Answers (ok, reason): the reason is the body, for whoever reads a failing probe."""

REQUEST_TIMEOUT = 10.0
"""Seconds a client may take to send its request: a stuck client must not hold a thread."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        alive: Probe,
        ready: Probe,
        metrics: Metrics | None,
        hints: HintBox | None = None,
        hints_path: str = "/mlflow-hints",
        log: Any = None,
    ) -> None:
        assert config.listen is not None
        self.config = config
        self._alive = alive
        self._ready = ready
        self._metrics = metrics
        self.hints = hints
        self.hints_path = hints_path
        self._log = log
        self._refusals: dict[tuple[str, str], int] = {}
        self._refusals_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve. A port in use may free itself (exit 1, restarted); an address this
        host does not have, or a port it may not use, is a config error (exit 2)."""
        host, port = self.config.listen or ("127.0.0.1", 0)
        handler = _handler(self)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            where = f"{self.config.display_listen}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                raise WatcherError(f"cannot listen on {where} (server.listen)") from None
            raise ConfigError([f"server.listen: cannot listen on {where}"]) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # The request handler calls these.

    def probe(self, path: str) -> tuple[int, str]:
        check = self._alive if path == "/healthz" else self._ready
        try:
            ok, reason = check()
        except Exception as exc:  # a probe that crashes is a failing probe, not a dead server
            ok, reason = False, f"probe failed: {type(exc).__name__}: {exc}"
        return (200 if ok else 503), reason

    def authorised(self, header: str | None) -> bool:
        token = self.config.metrics_token
        if token is None:
            return True
        given = bearer_token(header)
        return given is not None and same_secret(given, token.reveal())

    def hint(
        self, headers: dict[str, str], length: str | None, read: Callable[[int], bytes]
    ) -> Verdict:
        """Judge one POST to the hints path: its length first (nothing is read past
        MAX_BODY), then its signature, freshness and body (HintBox.offer)."""
        assert self.hints is not None
        if length is None or not length.strip().isdigit():
            verdict = self.hints.refuse(NO_LENGTH)
        elif int(length) > MAX_BODY:
            verdict = self.hints.refuse(TOO_LARGE)
        else:
            verdict = self.hints.offer(headers, read(int(length)), time.time())
        self._log_hint(verdict)
        return verdict

    def _log_hint(self, verdict: Verdict) -> None:
        """One line per accepted hint; a refusal logged with its reason, the 1st, 2nd, 4th,
        8th... of each (result, reason), so a flood of forgeries cannot flood the log."""
        if self._log is None:
            return
        if verdict.accepted:
            self._log.info("hint.accepted", hint_event=verdict.event, model=verdict.model)
            return
        with self._refusals_lock:
            key = (verdict.result, verdict.reason)
            count = self._refusals[key] = self._refusals.get(key, 0) + 1
            if len(self._refusals) > 1000:  # reasons are few; bound them anyway
                self._refusals = {key: count}
        if count & (count - 1) == 0:
            self._log.warning(
                "hint.refused",
                result=verdict.result,
                reason=verdict.reason,
                **({"repeated": count} if count > 1 else {}),
            )

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        assert self._metrics is not None
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._metrics.registry), content_type


NO_LENGTH = "no Content-Length"
TOO_LARGE = f"a body over {MAX_BODY} bytes"

_HINT_ANSWERS = {
    "accepted": (204, ""),
    # 200: MLflow retries 429 and 5xx only, and a replay must not be sent again.
    "replayed": (200, "ignored, already seen"),
    "forged": (401, "refused"),
    "invalid": (400, "refused"),
}
"""The answer to each hint result: its status and the note before the reason."""


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT
        server_version = "mlflow-watcher"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/healthz", "/readyz"):
                status, reason = server.probe(path)
                self._answer(status, (reason + "\n").encode(), "text/plain; charset=utf-8")
            elif path == "/metrics" and server._metrics is not None:
                if not server.authorised(self.headers.get("Authorization")):
                    self._answer(
                        401,
                        b"a bearer token is needed for /metrics\n",
                        "text/plain; charset=utf-8",
                        {"WWW-Authenticate": 'Bearer realm="metrics"'},
                    )
                    return
                body, content_type = server.exposition(self.headers.get("Accept"))
                self._answer(200, body, content_type)
            else:
                self._answer(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if server.hints is None or path != server.hints_path:
                self.close_connection = True  # its body is left unread
                self._answer(404, b"not found\n", "text/plain")
                return
            try:
                verdict = server.hint(
                    dict(self.headers.items()), self.headers.get("Content-Length"), self.rfile.read
                )
            except Exception as exc:  # never a traceback to MLflow or on stderr
                if server._log is not None:
                    server._log.error("hint.failed", error=f"{type(exc).__name__}: {exc}")
                self.close_connection = True
                self._answer(500, b"the hint could not be handled\n", "text/plain")
                return
            status, note = _HINT_ANSWERS[verdict.result]
            unread = verdict.reason in (NO_LENGTH, TOO_LARGE)
            if verdict.reason == TOO_LARGE:
                status = 413
            if unread:  # the body was not read: this connection cannot carry another request
                self.close_connection = True
            if status == 204:
                self._answer(204, b"", "")
            else:
                self._answer(status, f"{note}: {verdict.reason}\n".encode(), "text/plain")

        def _answer(
            self,
            status: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            if status != 204:  # No Content: neither a type nor a length
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would drown the log

    return Handler
