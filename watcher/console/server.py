"""The console's server: waitress on a daemon thread, on ``[console] listen``.

waitress is a production WSGI server in pure Python: a few worker threads behind one
asyncore loop, which fits a daemon that is threads already. The loop runs here one turn at a
time so that ``stop`` ends it from the serving thread itself, without closing sockets under
its feet.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

import structlog
from waitress import wasyncore
from waitress.server import create_server

from watcher.config import ConsoleConfig
from watcher.errors import ConfigError, WatcherError

_log = structlog.get_logger("watcher.console")

THREADS = 4
"""Requests served at once: a console has a few people, not a crowd."""
TURN = 0.5
"""Seconds one turn of the loop waits for a socket: how soon ``stop`` is noticed."""


class ConsoleServer:
    def __init__(self, config: ConsoleConfig, app: Any) -> None:
        assert config.listen is not None
        self.config = config
        self._app = app
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the port the system chose when ``listen`` says 0."""
        assert self._address is not None
        return self._address

    def start(self) -> None:
        """Bind and serve. A port in use may free itself (exit 1, restarted); an address this
        host does not have, or a port it may not use, is a config error (exit 2)."""
        host, port = self.config.listen or ("127.0.0.1", 0)
        try:
            self._server = create_server(
                self._app,
                map=self._map,
                host=host,
                port=port,
                threads=THREADS,
                ident="mlflow-watcher",
                # A slow client must not hold a thread; answers are small pages.
                channel_timeout=30,
            )
        except OSError as exc:
            where = f"{self.config.display_listen}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                raise WatcherError(f"cannot listen on {where} (console.listen)") from None
            raise ConfigError([f"console.listen: cannot listen on {where}"]) from None
        host, port = self._server.socket.getsockname()[:2]
        self._address = (str(host), int(port))
        self._thread = threading.Thread(target=self._serve, name="console-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Turns of the loop until ``stop``; an error in one is logged, never the end of the
        console (nor of the daemon it serves beside)."""
        while not self._stopping.is_set():
            try:
                wasyncore.loop(timeout=TURN, map=self._map, count=1)
            except Exception as exc:
                _log.exception("console.error", error=f"{type(exc).__name__}: {exc}")
                self._stopping.wait(TURN)
        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10 * TURN)
            self._thread = None
