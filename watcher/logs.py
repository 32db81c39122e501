"""structlog set-up: one event name per line with key/values; JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "silent": logging.CRITICAL,  # run --once without --verbose: the watcher logs no criticals
}


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Logs go to stderr (stdout is for command output such as --dry-run's events)."""
    stream = sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (MLflow, APScheduler, urllib3) log through stdlib logging: keep them quiet
    # unless debugging, and off our stdout.
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(name)s: %(message)s")
    quiet = {"debug": logging.DEBUG, "silent": logging.CRITICAL}.get(level, logging.ERROR)
    logging.getLogger().setLevel(quiet)
    # psycopg sets its own logger to WARNING on import, so its pool would print every failed
    # reconnection as unstructured lines between ours; the watcher reports an unreachable
    # database itself, in one line.
    logging.getLogger("psycopg").setLevel(quiet)


def get_logger() -> Any:
    return structlog.get_logger("watcher")
