"""`hints register`: MLflow's native webhook that sends hints to this watcher ([hints])."""

from __future__ import annotations

import json
import shlex
from urllib.parse import urlsplit

import click

from watcher.cli.common import EXIT_STATUSES, config_option, fail, load
from watcher.config import Config
from watcher.errors import ExitCode, RegistryError
from watcher.hints import HINT_EVENTS, MODEL_EVENTS
from watcher.pipeline import reader_settings
from watcher.registry import register_hint_webhook

DEFAULT_NAME = "mlflow-watcher-hints"


@click.group(epilog=EXIT_STATUSES)
def hints() -> None:
    """MLflow's native webhooks as wake-up calls for the poll ([hints])."""


@hints.command(epilog=EXIT_STATUSES)
@config_option
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="Where MLflow sends hints: this watcher's [hints] path as the MLflow server reaches "
    "it, e.g. https://watcher.example.com/mlflow-hints.",
)
@click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="The webhook's name in MLflow: one of that name is updated, not duplicated.",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the one-line Python command that registers it instead (the secret read from "
    "the same variable or file, never printed).",
)
def register(config_path: str | None, url: str, name: str, print_only: bool) -> None:
    """Register (or update) MLflow's native webhook for hints on the configured server.

    It sends every registry and prompt event MLflow has to URL, signed with the [hints]
    secret. The server needs MLflow 3.3 or later on a SQL store, and, for an http:// URL or
    a private address, MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and
    MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true in its environment.
    """
    config = load(config_path, credentials=not print_only)
    if not config.hints.enabled:
        fail(
            "usage error: hints are off: set [hints] secret_env or secret_file (the secret "
            "MLflow signs hints with), and [server] listen",
            ExitCode.USAGE,
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"usage error: --url: got {url!r}, expected an http(s):// URL", ExitCode.USAGE)
    if parts.path != config.hints.path:
        click.echo(
            f"mlflow-watcher: warning: --url ends in {parts.path or '/'!r}, but this watcher "
            f"takes hints at {config.hints.path!r} ([hints] path)",
            err=True,
        )
    if print_only:
        click.echo(register_command(config, url, name))
        return
    assert config.hints.secret is not None
    try:
        webhook_id, created = register_hint_webhook(
            reader_settings(config),
            name=name,
            url=url,
            secret=config.hints.secret.reveal(),
            events=HINT_EVENTS,
            fallback_events=MODEL_EVENTS,
        )
    except RegistryError as exc:
        fail(f"error: {exc}", ExitCode.FAILED)
    done = "registered" if created else "updated"
    click.echo(f"{done} MLflow webhook {name!r} (id {webhook_id}): hints go to {url}")


def register_command(config: Config, url: str, name: str) -> str:
    """``python -c '...'`` creating the webhook with MLflow's client: the registry URI without
    credentials (give them as MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN), the secret read
    where the watcher reads it."""
    source = config.hints.secret_source or "env:"
    kind, _, where = source.partition(":")
    if kind == "env":
        secret = f"os.environ[{_py(where)}]"
    else:  # as the watcher reads it: ${VAR} expanded, one line ending removed
        path = f"os.path.expandvars({_py(where)})" if "$" in where else _py(where)
        secret = (
            f'open({path}, encoding="utf-8").read().removesuffix(chr(10)).removesuffix(chr(13))'
        )
    registry = _py(_without_credentials(config.mlflow.effective_registry_uri))
    code = (
        "import os; from mlflow import MlflowClient; "
        f"MlflowClient(tracking_uri={registry}, registry_uri={registry}).create_webhook("
        f"name={_py(name)}, url={_py(url)}, events={_py(list(HINT_EVENTS))}, secret={secret})"
    )
    # MLflow's client picks the workspace from the environment: the one the watcher reads.
    workspace = config.mlflow.workspace
    prefix = f"MLFLOW_WORKSPACE={shlex.quote(workspace)} " if workspace else ""
    return f"{prefix}python -c {shlex.quote(code)}"


def _py(value: object) -> str:
    """A Python literal of a string or a list of strings, in double quotes (JSON's are)."""
    return json.dumps(value)


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
