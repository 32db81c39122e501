"""`state copy`: moving an install's SQLite state into a PostgreSQL namespace, so replicas can
share it without a new baseline and without losing a queued delivery."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from watcher.cli.common import EXIT_STATUSES, config_option, fail, load
from watcher.config.parsers import Invalid, parse_namespace, parse_state_url
from watcher.config.types import redact_uri
from watcher.errors import ExitCode
from watcher.store import PgSettings, Store, copy_state, open_sqlite_source


@click.group(epilog=EXIT_STATUSES)
def state() -> None:
    """The state database: moving it from a SQLite file to PostgreSQL."""


@state.command("copy", epilog=EXIT_STATUSES)
@config_option
@click.option(
    "--from",
    "source",
    metavar="PATH",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The SQLite state file to copy. Default: the config's [state] path.",
)
@click.option(
    "--to",
    "target",
    metavar="URL",
    help="The postgresql:// database to copy into. Default: the config's [state] url. "
    "Give the password with PGPASSWORD, PGPASSFILE or the config's state.password_env.",
)
@click.option(
    "--namespace",
    metavar="NAME",
    help="The namespace (schema) to copy into; it must hold no state yet. "
    "Default: the config's [state] namespace.",
)
def copy(
    config_path: str | None, source: Path | None, target: str | None, namespace: str | None
) -> None:
    """Copy a SQLite state into an empty PostgreSQL namespace.

    The snapshot, the events, the queued and settled deliveries (under their own delivery
    ids) and the attempt log are copied in one transaction, so the watcher, started on the new
    state, goes on without a new baseline and sends what was queued. Stop the watcher first:
    the copy holds the state file's lock while it runs.
    """
    config = load(config_path, credentials=False)
    path = source or config.state.path
    url = _target_url(target or config.state.url)
    name = _namespace(namespace or config.state.namespace)
    password = config.state.password
    settings = PgSettings(
        url=url,
        namespace=name,
        password=None if password is None else password.reveal(),
        connect_timeout=config.state.connect_timeout,
        statement_timeout=config.state.statement_timeout,
    )
    with open_sqlite_source(path) as from_store, Store.connect(settings) as to_store:
        report = copy_state(from_store, to_store)
        where = to_store.location
    click.echo(f"copied {str(path)!r} into {where}:")
    width = max(len(t) for t in report.rows)
    for table, count in report.rows.items():
        click.echo(f"  {table:<{width}}  {count:>9}")
    click.echo(
        "next: in the config's [state], instead of path:\n"
        f'  url = "{_without_password(url)}"\n'
        f'  namespace = "{name}"\n'
        "and the password with password_env or password_file (or PGPASSWORD, PGPASSFILE);\n"
        "then start the watcher: it goes on from the copied snapshot, with no new baseline.\n"
        f"Never start a watcher on {str(path)!r} again: it would deliver beside the new state."
    )


def _without_password(url: str) -> str:
    """The URL as the config file may hold it: the password goes elsewhere."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.netloc.rpartition('@')[2]}"))


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def _target_url(value: str | None) -> str:
    """The --to URL, checked as the config checks [state] url; a password in it came from the
    user's own shell, so it is accepted, but warned about (the process list shows it) and
    never printed."""
    if value is None:
        fail(
            "usage error: say where to copy to: --to postgresql://USER@HOST/DB, or [state] url "
            "in the config",
            ExitCode.USAGE,
        )
    try:
        url = parse_state_url(value)
    except Invalid as exc:
        fail(f"usage error: --to {redact_uri(value)}: expected {exc}", ExitCode.USAGE)
    if _has_password(url):
        click.echo(
            "mlflow-watcher: warning: the password in --to shows in the process list; "
            "prefer PGPASSWORD or PGPASSFILE",
            err=True,
        )
    return url


def _namespace(value: str) -> str:
    try:
        return parse_namespace(value)
    except Invalid as exc:
        fail(f"usage error: --namespace {value!r}: expected {exc}", ExitCode.USAGE)
