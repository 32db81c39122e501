"""The web console: the overview, the deliveries and their requests and answers, the events,
and the actions (redeliver, test event), served from the state by Flask on waitress.

- ``app``: the Flask application, its settings and security headers;
- ``auth``: signing in (token, user and password, a trusted proxy header) and the session;
- ``views`` and ``actions``: the pages, and the POSTs that write to the state;
- ``params``, ``texts``, ``chart``: query parameters, how values are written, the SVG chart;
- ``server``: the waitress server on a daemon thread (the daemon's, or ``console``'s own).

Only this package imports Flask, waitress and Flask-WTF (the ``console`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcher.config import Config
from watcher.config.types import CONSOLE_NEEDS_CREDENTIAL
from watcher.errors import ConfigError

if TYPE_CHECKING:
    from watcher.console.server import ConsoleServer
    from watcher.store import Store


def start_console(config: Config, store: Store, *, read_only: bool | None = None) -> ConsoleServer:
    """The console on ``store``, bound to ``[console] listen`` and serving on its own thread.

    Flask and waitress are imported here, when a console is wanted: they are the ``console``
    extra, and a watcher without it runs as before."""
    if not config.console.has_way_in:
        raise ConfigError([f"console.listen: {CONSOLE_NEEDS_CREDENTIAL}"])
    try:
        from watcher.console.app import create_app
        from watcher.console.server import ConsoleServer
    except ImportError as exc:
        raise ConfigError(
            [
                f"console.listen: the console needs the `console` extra ({exc.name} is not "
                "installed): pip install 'mlflow-registry-watcher[console]'"
            ]
        ) from None
    server = ConsoleServer(config.console, create_app(config, store, read_only=read_only))
    server.start()
    return server
