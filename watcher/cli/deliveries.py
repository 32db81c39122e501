"""`deliveries`, `redeliver` and `purge`: the outbox and the delivery log, from the state file."""

from __future__ import annotations

import dataclasses
import json
import time

import click

from watcher.cli.common import EXIT_STATUSES, config_option, duration_value, fail, load, open_state
from watcher.cli.text import age, clip, table
from watcher.errors import ExitCode
from watcher.store import DEAD, DELIVERED, MIN_ID_PREFIX, PENDING, DeliveryRow


def _last_outcome(row: DeliveryRow) -> str:
    if row.last_error:
        return clip(row.last_error, 48)
    if row.last_status_code is not None:
        return str(row.last_status_code)
    return "-"


def _table(rows: list[DeliveryRow], now: float) -> list[str]:
    """The deliveries as a table, ids cut to the 8 characters redeliver accepts."""
    header = ("ID", "STATUS", "WEBHOOK", "EVENT", "MODEL", "VERSION", "ATTEMPTS", "LAST", "AGE")
    cells = [header] + [
        (
            row.delivery_id[:8],
            row.status,
            row.webhook,
            row.event_type,
            row.model_name,
            row.model_version or "-",
            str(row.total_attempts),
            _last_outcome(row),
            age(now - row.created_at),
        )
        for row in rows
    ]
    return table(cells)


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.option(
    "--status",
    type=click.Choice([PENDING, DELIVERED, DEAD]),
    help="Only deliveries with this status.",
)
@click.option("--webhook", metavar="NAME", help="Only deliveries to this webhook.")
@click.option("--model", metavar="NAME", help="Only deliveries for this registered model.")
@click.option(
    "--since",
    callback=duration_value,
    metavar="DURATION",
    help="Only deliveries queued or attempted in the last DURATION (30s, 5m, 1h, 2d).",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the newest N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, full ids.")
def deliveries(
    config_path: str | None,
    status: str | None,
    webhook: str | None,
    model: str | None,
    since: float | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List the outbox and delivery log from the state file, newest last.

    AGE counts from when a delivery was queued (or queued again by redeliver); ATTEMPTS counts
    every attempt in the log; LAST is the last answer's status or error.
    """
    config = load(config_path, credentials=False)
    now = time.time()
    with open_state(config) as store:
        rows = store.list_deliveries(
            status=status,
            webhook=webhook,
            model=model,
            since=None if since is None else now - since,
            limit=limit,
        )
    if as_json:
        for row in rows:
            click.echo(json.dumps(dataclasses.asdict(row)))
    elif rows:
        for line in _table(rows, now):
            click.echo(line)
    else:
        click.echo("mlflow-watcher: no deliveries match", err=True)


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--dead", is_flag=True, help="Every dead delivery (narrowed by the other options).")
@click.option(
    "--webhook",
    metavar="NAME",
    help="Only deliveries to this webhook; alone, its dead deliveries.",
)
@click.option(
    "--since",
    callback=duration_value,
    metavar="DURATION",
    help="Deliveries queued or attempted in the last DURATION, delivered ones included.",
)
def redeliver(
    config_path: str | None,
    ids: tuple[str, ...],
    dead: bool,
    webhook: str | None,
    since: float | None,
) -> None:
    """Queue deliveries again, under their own delivery id, so receivers can deduplicate.

    ID is a delivery id, or a unique prefix of at least 8 characters as `deliveries` shows it,
    in any status. The options narrow each other. A re-queued delivery is due at once and its
    retries (max_attempts, max_age) start afresh; its earlier attempts stay in the log. A
    running watcher sends it within a second; from cron, the next `run --once` does.
    """
    if not (ids or dead or webhook or since):
        fail(
            "usage error: say what to redeliver: delivery IDs, --dead, --webhook or --since",
            ExitCode.USAGE,
        )
    short = [i for i in ids if len(i.strip()) < MIN_ID_PREFIX]
    if short:
        fail(
            f"usage error: give at least {MIN_ID_PREFIX} characters of a delivery id: "
            + ", ".join(short),
            ExitCode.USAGE,
        )
    config = load(config_path, credentials=False)
    with open_state(config) as store:
        count = store.redeliver(
            list(ids) or None,
            dead=dead,
            webhook=webhook,
            since=None if since is None else time.time() - since,
            now=time.time(),
        )
    click.echo(f"re-queued {count} deliveries")
    if count and webhook and config.webhook(webhook) is None:
        click.echo(
            f"mlflow-watcher: webhook {webhook!r} is not configured; "
            "its deliveries stay queued until it is",
            err=True,
        )


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.option("--dead", is_flag=True, help="Required: only dead deliveries are ever purged.")
@click.option(
    "--older-than",
    callback=duration_value,
    required=True,
    metavar="DURATION",
    help="Only those dead for longer than this, e.g. 30d.",
)
def purge(config_path: str | None, dead: bool, older_than: float) -> None:
    """Delete dead deliveries, and their attempts, from the state file for good."""
    if not dead:
        fail(
            "usage error: purge deletes dead deliveries only; say so with --dead",
            ExitCode.USAGE,
        )
    config = load(config_path, credentials=False)
    with open_state(config) as store:
        count = store.purge(older_than=older_than, now=time.time())
    click.echo(f"purged {count} dead deliveries")
