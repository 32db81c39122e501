"""`mlflow-watcher run`: the daemon, ``--once`` for cron, ``--dry-run`` to look first.

This module parses the options and reports the outcome; watcher.app builds what runs.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcher.cli.common import EXIT_STATUSES, F, config_option, fail, load
from watcher.config import Config, parse_listen
from watcher.errors import ExitCode

if TYPE_CHECKING:  # imported when run, not for every command: they start faster without
    from watcher.app import Assembly
    from watcher.pipeline import CycleReport
    from watcher.service import OnceResult


def _listen(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        listen = parse_listen(value)
    except Exception as exc:
        raise click.BadParameter(f"got {value!r}, expected {exc}") from None
    if listen is None:
        raise click.BadParameter('expected HOST:PORT such as "127.0.0.1:9464"')
    return listen


def listen_option(help_text: str) -> Callable[[F], F]:
    """``--listen HOST:PORT``, parsed as the config parses ``listen``."""
    return click.option(
        "--listen",
        callback=lambda _ctx, _param, value: _listen(value),
        metavar="HOST:PORT",
        help=help_text,
    )


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.option("--once", is_flag=True, help="Poll once, deliver what is pending, exit (for cron).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the events a poll would emit as JSON lines; change nothing.",
)
@click.option(
    "--emit-existing",
    is_flag=True,
    help="On the first poll, emit events for what exists instead of a silent baseline.",
)
@click.option(
    "--wait-for-lock",
    is_flag=True,
    help="Wait for another watcher on the same state instead of exiting 4.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="With --once: log every poll and delivery, not only failures.",
)
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="With --once: write the metrics to PATH (node-exporter textfile format, atomically).",
)
@listen_option("Serve /healthz, /readyz and /metrics here (overrides [server] listen).")
def run(
    config_path: str | None,
    once: bool,
    dry_run: bool,
    emit_existing: bool,
    wait_for_lock: bool,
    verbose: bool,
    textfile: Path | None,
    listen: tuple[str, int] | None,
) -> None:
    """Watch the registry and deliver webhooks (a daemon, unless --once or --dry-run)."""
    from watcher import app, logs

    if textfile is not None and not once:
        fail(
            "usage error: --textfile goes with --once (a daemon serves /metrics: "
            "set [server] listen)",
            ExitCode.USAGE,
        )

    # From the first moment, SIGTERM/SIGINT ask for a clean stop instead of killing the process
    # mid-start; the daemon honours the request once it is running.
    stopping = threading.Event()
    if not dry_run:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
    config = load(config_path)
    if listen is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=listen)
        )
    level = config.log.level
    if once and not verbose:
        level = "silent"  # cron mails whatever a job prints: a summary line on failure, no more
    elif dry_run and not verbose and level in ("debug", "info", "warning"):
        level = "error"  # its own summary line says what went wrong
    logs.configure(level, config.log.format)
    log = logs.get_logger()
    if dry_run:
        report = app.dry_run(config, log, emit_existing=emit_existing)
        sys.exit(_report_dry_run(config, report, emit_existing))
    with app.assemble(
        config,
        log,
        daemon=not once,
        emit_existing=emit_existing,
        wait_for_lock=wait_for_lock,
        progress=_progress_printer(),
    ) as assembly:
        if once:
            sys.exit(_report_once(assembly, assembly.once(stopping), textfile))
        sys.exit(assembly.serve(stopping))


def _progress_printer() -> Callable[[str, int], None] | None:
    """On a terminal, a long full read shows how far it got (models, then versions)."""
    if not sys.stderr.isatty():
        return None

    shown = False

    def show(what: str, count: int) -> None:
        nonlocal shown
        if what == "done":
            if shown:
                click.echo("", err=True)
            shown = False
            return
        shown = True
        click.echo(f"\rreading the registry: {count} {what}...", err=True, nl=False)

    return show


def _report_once(assembly: Assembly, result: OnceResult, textfile: Path | None) -> ExitCode:
    """One line per problem of a ``--once`` run (cron mails them), and its exit status."""
    problems = []
    if textfile is not None:
        try:
            assembly.metrics.write_textfile(textfile)
        except OSError as exc:
            problems.append(f"cannot write --textfile {str(textfile)!r}: {exc.strerror or exc}")
    if not result.cycle.ok:
        problems.append(f"the registry could not be read: {result.cycle.error}")
    if result.drain.failed:
        problems.append(
            f"{result.drain.failed} deliveries failed ({result.drain.retrying} queued for retry, "
            f"{result.drain.dead} dead); {result.pending} pending in all"
        )
    for problem in problems:
        click.echo(f"mlflow-watcher: {problem}", err=True)
    if not result.cycle.ok:
        return ExitCode.FAILED
    if result.drain.failed:
        return ExitCode.DELIVERY
    return ExitCode.FAILED if problems else ExitCode.OK


def _report_dry_run(config: Config, report: CycleReport, emit_existing: bool) -> ExitCode:
    """The events as JSON lines with the webhooks each would go to; a note on a baseline."""
    if not report.ok:
        click.echo(f"mlflow-watcher: the registry could not be read: {report.error}", err=True)
        return ExitCode.FAILED
    for event in report.events:
        targets = [w.name for w in config.webhooks if w.wants(event)]
        click.echo(json.dumps({**event.to_dict(), "webhooks": targets}))
    if report.baseline and not emit_existing:
        click.echo(
            f"mlflow-watcher: no snapshot yet: the first run records a baseline of "
            f"{report.models} models and {report.versions} versions and emits nothing "
            "(--emit-existing to emit them)",
            err=True,
        )
    return ExitCode.OK
