"""`mlflow-watcher console`: the web console on the state, for installs without a daemon.

A cron install runs ``run --once`` now and then and has no process to serve the console: this
command serves the same pages beside it, on the state opened without the single-writer lock
(as ``deliveries`` and ``redeliver`` open it), so the cron runs keep working. What its actions
queue goes out with the next ``run --once`` (on a shared state: with the leader).
"""

from __future__ import annotations

import dataclasses
import signal
import threading

import click

from watcher.cli.common import EXIT_STATUSES, config_option, fail, load, open_state
from watcher.cli.run import listen_option
from watcher.errors import ExitCode


@click.command("console", epilog=EXIT_STATUSES)
@config_option
@listen_option("Serve the console here (overrides [console] listen).")
@click.option("--read-only", is_flag=True, help="Show everything, offer and take no action.")
def console(config_path: str | None, listen: tuple[str, int] | None, read_only: bool) -> None:
    """Serve the web console on the state until SIGTERM or Ctrl-C.

    The daemon serves it itself when [console] listen is set; this command is for cron
    installs. Sign-in is as [console] configures it (a token, a user and password, or a
    trusted proxy header).
    """
    from watcher import logs
    from watcher.console import start_console

    config = load(config_path)
    if listen is not None:
        config = dataclasses.replace(
            config, console=dataclasses.replace(config.console, listen=listen)
        )
    if config.console.listen is None:
        fail(
            "usage error: no address to serve the console on: set [console] listen or --listen",
            ExitCode.USAGE,
        )
    logs.configure(config.log.level, config.log.format)
    log = logs.get_logger()
    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        with open_state(config) as store:
            server = start_console(config, store, read_only=read_only or None)
            log.info(
                "console.started",
                listen=config.console.display_listen,
                state=store.location,
                read_only=read_only or config.console.read_only,
            )
            try:
                while not stopping.wait(1.0):
                    pass
            finally:
                server.stop()
            log.info("console.stopped")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
