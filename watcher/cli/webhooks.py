"""`check-config`, `render` and `test-webhook`: the config, and what a webhook is sent."""

from __future__ import annotations

import json
import sys

import click

from watcher.cli.common import EXIT_STATUSES, F, config_option, fail, load
from watcher.config import Config, WebhookConfig, effective_config, to_toml
from watcher.errors import ExitCode
from watcher.model import Event
from watcher.store import Store


@click.command("check-config", epilog=EXIT_STATUSES)
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration and print it as it will be used, secrets redacted."""
    config = load(config_path)
    click.echo(f"# effective configuration (from {config.source}; secrets redacted)")
    click.echo(to_toml(effective_config(config)), nl=False)


# --------------------------------------------------------------------------- test-webhook, render


def _event_option(fn: F) -> F:
    return click.option(
        "--event",
        "event_name",
        metavar="EVENT",
        help="Event type (canonical or MLflow native name). Default: the first the webhook wants.",
    )(fn)


def _pick_event(
    config: Config, name: str, event_name: str | None, from_log: bool
) -> tuple[WebhookConfig, Event]:
    """Webhook NAME and the event to show it: a recorded one (--from-log) or an example."""
    from watcher.config import event_by_name
    from watcher.payloads import example_event

    webhook = config.webhook(name)
    if webhook is None:
        known = ", ".join(w.name for w in config.webhooks) or "none configured"
        fail(f"usage error: no webhook named {name!r} (webhooks: {known})", ExitCode.USAGE)
    event_type = None
    if event_name:
        event_type = event_by_name(event_name)
        if event_type is None:
            fail(f"usage error: --event: unknown event {event_name!r}", ExitCode.USAGE)
    if from_log:
        if not config.state.shared and not config.state.path.exists():
            fail(f"error: no state file at {str(config.state.path)!r} yet", ExitCode.FAILED)
        with Store.for_config(config.state, lock=False) as store:
            for event in store.recent_events(limit=1000):
                if (event_type is None or event.type == event_type) and webhook.wants(event):
                    return webhook, event
        fail("error: no recorded event fits this webhook (and --event)", ExitCode.FAILED)
    if event_type is None:
        event_type = min(webhook.events)
    return webhook, example_event(event_type)


@click.command("test-webhook", epilog=EXIT_STATUSES)
@config_option
@click.argument("name")
@_event_option
@click.option("--from-log", is_flag=True, help="Send a real recent event from the state file.")
def test_webhook(
    config_path: str | None, name: str, event_name: str | None, from_log: bool
) -> None:
    """Send one example event to webhook NAME, the way the daemon would, and show the answer.

    Uses the same rendering, signing and HTTP path as real deliveries, without the daemon and
    without touching the outbox. Exit 0 on a 2xx answer, 3 otherwise.
    """
    from watcher.deliver import Sender
    from watcher.model import make_delivery_id

    config = load(config_path)
    webhook, event = _pick_event(config, name, event_name, from_log)
    sender = Sender(config.mlflow.payload_context)
    result = sender.post(webhook, event, make_delivery_id(event.event_id, webhook.name))
    sender.close()
    click.echo(f"{event.type.value} -> {webhook.name} ({webhook.display_url})")
    if result.status_code is not None:
        click.echo(f"status: {result.status_code}  latency: {result.latency_ms:.0f} ms")
        if result.body:
            click.echo(f"body: {result.body}")
    if result.error:
        click.echo(f"error: {result.error}")
    sys.exit(ExitCode.OK if result.ok else ExitCode.DELIVERY)


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.argument("name")
@_event_option
@click.option("--from-log", is_flag=True, help="Render a real recent event from the state file.")
@click.option("--reveal-secrets", is_flag=True, help="Show header values and tokens as sent.")
def render(
    config_path: str | None,
    name: str,
    event_name: str | None,
    from_log: bool,
    reveal_secrets: bool,
) -> None:
    """Print the exact headers and body that webhook NAME would be sent for an event.

    Header values from the config (they often carry tokens) and trigger tokens in the body are
    shown as <redacted> unless --reveal-secrets is given.
    """
    from watcher.deliver import Sender, redact_request
    from watcher.model import make_delivery_id

    config = load(config_path)
    webhook, event = _pick_event(config, name, event_name, from_log)
    sender = Sender(config.mlflow.payload_context)
    prepared = sender.prepare(webhook, event, make_delivery_id(event.event_id, webhook.name))
    headers = list(prepared.headers.items())
    if reveal_secrets:
        url, body = webhook.url, prepared.body.decode("utf-8", "replace")
    else:
        # The same redaction as the delivery log and the console show.
        shown = json.loads(redact_request(webhook, webhook.url, headers, prepared.body))
        url, body = shown["url"], shown["body"]
        headers = [(header, value) for header, value in shown["headers"]]
    click.echo(f"POST {url}")
    for header, value in headers:
        click.echo(f"{header}: {value}")
    click.echo("")
    click.echo(body)
