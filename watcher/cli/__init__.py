"""The `mlflow-watcher` command: the group, its commands (one module per group of commands)
and the entry point that turns every error into one line and an exit status."""

from __future__ import annotations

import os
import sys

import click

from watcher import __version__
from watcher.cli.common import EXIT_STATUSES, fail
from watcher.cli.console import console
from watcher.cli.deliveries import deliveries, purge, redeliver
from watcher.cli.hints import hints
from watcher.cli.receive import receive
from watcher.cli.run import run
from watcher.cli.state import state
from watcher.cli.status import healthcheck, status
from watcher.cli.webhooks import check_config, render, test_webhook
from watcher.errors import ConfigError, ExitCode, WatcherError


@click.group(epilog=EXIT_STATUSES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-watcher")
def cli() -> None:
    """Turn MLflow model registry changes into signed, reliable webhooks."""


for command in (
    run,
    check_config,
    test_webhook,
    render,
    deliveries,
    redeliver,
    purge,
    status,
    healthcheck,
    receive,
    state,
    console,
    hints,
):
    cli.add_command(command)


def main() -> None:
    """The console script: every error becomes ``mlflow-watcher: ...`` lines and its status."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mlflow-watcher: aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"mlflow-watcher: config error: {problem}", err=True)
        sys.exit(ExitCode.USAGE)
    except WatcherError as exc:
        fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:
        if os.environ.get("WATCHER_DEBUG"):
            raise
        fail(
            f"internal error: {type(exc).__name__}: {exc} (set WATCHER_DEBUG=1 for a traceback)",
            ExitCode.FAILED,
        )


__all__ = ["cli", "main"]
