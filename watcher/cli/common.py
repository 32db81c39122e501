"""What every command shares: the --config option, loading the config, one-line failures, the
exit statuses in --help, duration options and the state file opened beside a daemon.

How a command lays out text for a person (ages, clipped strings, tables) is in
:mod:`watcher.cli.text`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from watcher.config import Config, load_config, parse_duration, resolve_config_path
from watcher.errors import ExitCode
from watcher.store import Store

EXIT_STATUSES = "\b\nExit statuses:\n" + "\n".join(
    f"  {code.value}  {code.meaning}" for code in ExitCode if code is not ExitCode.INTERRUPTED
)
"""The epilog of each command's --help."""

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config_path",
        metavar="PATH",
        help="Config file. Default: $WATCHER_CONFIG, else ./watcher.toml, else built-in defaults.",
    )(fn)


def load(config_path: str | None, *, credentials: bool = True) -> Config:
    """The config; ``credentials=False`` for commands that send nothing (see load_config)."""
    path = resolve_config_path(config_path, os.environ)
    return load_config(path, os.environ, credentials=credentials)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Say what went wrong, one ``mlflow-watcher:`` line per line of ``message``, and exit."""
    for line in message.splitlines() or [""]:
        click.echo(f"mlflow-watcher: {line}", err=True)
    sys.exit(code)


def duration_value(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option callback: a duration option's value in seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except Exception:
        raise click.BadParameter(
            f'got {value!r}, expected a duration such as "30s", "5m", "1h", "30d"'
        ) from None


@contextmanager
def open_state(config: Config) -> Iterator[Store]:
    """The existing state, unlocked: a running daemon holds the lock of a SQLite file, and its
    WAL lets a second connection read and make small writes beside it; a PostgreSQL state is
    shared anyway."""
    path = config.state.path
    if not config.state.shared and not path.exists():
        fail(f"error: no state file at {str(path)!r} (has the watcher run yet?)", ExitCode.FAILED)
    with Store.for_config(config.state, lock=False) as store:
        yield store
