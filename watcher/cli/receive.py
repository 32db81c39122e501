"""`receive`: a small webhook receiver that verifies signatures, to try the watcher out."""

from __future__ import annotations

import os
from pathlib import Path

import click

from watcher.cli.common import fail
from watcher.errors import ExitCode


@click.command(epilog="Answers 401 to a delivery whose signature does not verify.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--secret-env",
    metavar="NAME",
    help="Verify signatures with the secret in this environment variable.",
)
@click.option(
    "--secret-file",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Verify signatures with the secret in this file.",
)
@click.option(
    "--status",
    default=200,
    show_default=True,
    type=click.IntRange(100, 599),
    help="Status to answer valid deliveries with (to try out retries).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each delivery as one JSON line.")
def receive(
    host: str,
    port: int,
    secret_env: str | None,
    secret_file: str | None,
    status: int,
    as_json: bool,
) -> None:
    """Listen for webhooks, verify their signatures, and print each delivery.

    The scheme (mlflow, standard, databricks, github) is recognised from the headers.
    """
    from watcher.receiver import Receiver

    secret: str | None = None
    if secret_env and secret_file:
        fail("usage error: give only one of --secret-env and --secret-file", ExitCode.USAGE)
    if secret_env:
        secret = os.environ.get(secret_env)
        if not secret:
            fail(
                f"--secret-env: environment variable {secret_env} is not set or empty",
                ExitCode.USAGE,
            )
    elif secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            fail(f"--secret-file: cannot read {secret_file!r}: {exc.strerror}", ExitCode.USAGE)
    try:
        receiver = Receiver(host, port, secret=secret, as_json=as_json, status=status)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", ExitCode.FAILED)
    bound_host, bound_port = receiver.address
    checking = "verifying signatures" if secret else "NOT verifying signatures (no secret given)"
    click.echo(f"listening on http://{bound_host}:{bound_port}/ ({checking})", err=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.shutdown()
