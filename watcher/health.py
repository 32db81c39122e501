"""The health and metrics HTTP server: /healthz, /readyz and /metrics, on a daemon thread.

The standard library's threading HTTP server is enough for a probe every few seconds and a
scrape every few more; it adds no dependency and stops with the process.
"""

from __future__ import annotations

import errno
import hmac
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from watcher.config import ServerConfig
from watcher.errors import ConfigError, WatcherError
from watcher.metrics import Metrics

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
    ) -> None:
        assert config.listen is not None
        self.config = config
        self._alive = alive
        self._ready = ready
        self._metrics = metrics
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
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()
        )

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        assert self._metrics is not None
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._metrics.registry), content_type


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

        def _answer(
            self,
            status: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would drown the log

    return Handler
