"""The `mlflow-watcher` command."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from watcher import __version__
from watcher.config import (
    TOKEN_FORMATS,
    Config,
    effective_config,
    load_config,
    parse_duration,
    parse_listen,
    resolve_config_path,
    to_toml,
)
from watcher.errors import ConfigError, WatcherError
from watcher.store import DEAD, DELIVERED, MIN_ID_PREFIX, PENDING, DeliveryRow, Store

EXIT_OK, EXIT_REGISTRY, EXIT_USAGE, EXIT_DELIVERY, EXIT_LOCKED = 0, 1, 2, 3, 4

EXIT_STATUSES = """\b
Exit statuses:
  0  done
  1  the registry could not be read (or another runtime error)
  2  bad configuration or usage
  3  some deliveries failed; they are queued for retry, or dead
  4  another watcher holds the lock on the state file"""

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config_path",
        metavar="PATH",
        help="Config file. Default: $WATCHER_CONFIG, else ./watcher.toml, else built-in defaults.",
    )(fn)


def _load(config_path: str | None, *, credentials: bool = True) -> Config:
    """The config; ``credentials=False`` for commands that send nothing (see load_config)."""
    path = resolve_config_path(config_path, os.environ)
    return load_config(path, os.environ, credentials=credentials)


def _fail(message: str, code: int) -> None:
    for line in message.splitlines() or [""]:
        click.echo(f"mlflow-watcher: {line}", err=True)
    sys.exit(code)


@click.group(epilog=EXIT_STATUSES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-watcher")
def cli() -> None:
    """Turn MLflow model registry changes into signed, reliable webhooks."""


# --------------------------------------------------------------------------- run


@cli.command(epilog=EXIT_STATUSES)
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
@click.option(
    "--listen",
    callback=lambda _ctx, _param, value: _listen(value),
    metavar="HOST:PORT",
    help="Serve /healthz, /readyz and /metrics here (overrides [server] listen).",
)
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
    from watcher import logs

    if textfile is not None and not once:
        _fail(
            "usage error: --textfile goes with --once (a daemon serves /metrics: "
            "set [server] listen)",
            EXIT_USAGE,
        )

    # From the first moment, SIGTERM/SIGINT ask for a clean stop instead of killing the process
    # mid-start; the daemon honours the request once it is running.
    stopping = threading.Event()
    if not dry_run:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
    config = _load(config_path)
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
        sys.exit(_dry_run(config, log, emit_existing))
    with Store.open(config.state.path, wait_for_lock=wait_for_lock) as store:
        from watcher.deliver import Deliverer
        from watcher.pipeline import Pipeline

        pipeline = Pipeline(
            config,
            store,
            log,
            emit_existing=emit_existing,
            always_full=once,
            background_scans=not once,
            progress=_progress_printer(),
        )
        pipeline.check_registry_matches()
        from watcher.metrics import Metrics

        metrics = Metrics(config, store)
        # Metrics counts each delivery outcome the deliverer reports.
        deliverer = Deliverer(store, config, log, observer=metrics)
        if once:
            sys.exit(_once(pipeline, deliverer, stopping, metrics, textfile))
        from watcher.service import Service

        sys.exit(Service(config, pipeline, deliverer, log, stopping, metrics=metrics).run())


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


def _once(
    pipeline: Any,
    deliverer: Any,
    stopping: threading.Event,
    metrics: Any = None,
    textfile: Path | None = None,
) -> int:
    from watcher.service import run_once

    result = run_once(pipeline, deliverer, stopping, metrics)
    deliverer.close()
    problems = []
    if textfile is not None and metrics is not None:
        try:
            metrics.write_textfile(textfile)
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
        return EXIT_REGISTRY
    if result.drain.failed:
        return EXIT_DELIVERY
    return EXIT_REGISTRY if problems else EXIT_OK


def _dry_run(config: Config, log: Any, emit_existing: bool) -> int:
    from watcher.pipeline import Pipeline

    with _readonly_state(config.state.path) as store:
        pipeline = Pipeline(config, store, log, emit_existing=emit_existing, always_full=True)
        report = pipeline.run_cycle(dry_run=True)
    if not report.ok:
        click.echo(f"mlflow-watcher: the registry could not be read: {report.error}", err=True)
        return EXIT_REGISTRY
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
    return EXIT_OK


@contextmanager
def _readonly_state(path: Path) -> Iterator[Store]:
    """The state for a dry run: the real one if it exists (unlocked, not written), else empty."""
    if path.exists():
        with Store.open(path, lock=False) as store:
            yield store
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        Store.open(Path(tmp) / "state.db", lock=False) as store,
    ):
        yield store


# --------------------------------------------------------------------------- check-config


@cli.command("check-config", epilog=EXIT_STATUSES)
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration and print it as it will be used, secrets redacted."""
    config = _load(config_path)
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


def _pick_event(config: Config, name: str, event_name: str | None, from_log: bool) -> Any:
    from watcher.config import event_by_name
    from watcher.payloads import example_event

    webhook = config.webhook(name)
    if webhook is None:
        known = ", ".join(w.name for w in config.webhooks) or "none configured"
        _fail(f"usage error: no webhook named {name!r} (webhooks: {known})", EXIT_USAGE)
    assert webhook is not None
    event_type = None
    if event_name:
        event_type = event_by_name(event_name)
        if event_type is None:
            _fail(f"usage error: --event: unknown event {event_name!r}", EXIT_USAGE)
    if from_log:
        if not config.state.path.exists():
            _fail(f"error: no state file at {str(config.state.path)!r} yet", EXIT_REGISTRY)
        with Store.open(config.state.path, lock=False) as store:
            for event in store.recent_events(limit=1000):
                if (event_type is None or event.type == event_type) and webhook.wants(event):
                    return webhook, event
        _fail("error: no recorded event fits this webhook (and --event)", EXIT_REGISTRY)
    if event_type is None:
        event_type = min(webhook.events)
    return webhook, example_event(event_type)


@cli.command("test-webhook", epilog=EXIT_STATUSES)
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

    config = _load(config_path)
    webhook, event = _pick_event(config, name, event_name, from_log)
    sender = Sender()
    result = sender.post(webhook, event, make_delivery_id(event.event_id, webhook.name))
    sender.close()
    click.echo(f"{event.type.value} -> {webhook.name} ({webhook.display_url})")
    if result.status_code is not None:
        click.echo(f"status: {result.status_code}  latency: {result.latency_ms:.0f} ms")
        if result.body:
            click.echo(f"body: {result.body}")
    if result.error:
        click.echo(f"error: {result.error}")
    sys.exit(EXIT_OK if result.ok else EXIT_DELIVERY)


@cli.command(epilog=EXIT_STATUSES)
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
    from watcher.deliver import Sender
    from watcher.model import make_delivery_id

    config = _load(config_path)
    webhook, event = _pick_event(config, name, event_name, from_log)
    prepared = Sender().prepare(webhook, event, make_delivery_id(event.event_id, webhook.name))
    body = prepared.body.decode("utf-8", "replace")
    secret_headers = {header for header, _ in webhook.headers}
    if webhook.username:
        secret_headers.add("Authorization")
    click.echo(f"POST {webhook.url if reveal_secrets else webhook.display_url}")
    for header, value in prepared.headers.items():
        shown = value if reveal_secrets or header not in secret_headers else "<redacted>"
        click.echo(f"{header}: {shown}")
    if not reveal_secrets and webhook.secret and webhook.format in TOKEN_FORMATS:
        from urllib.parse import quote_plus

        token = webhook.secret.reveal()
        body = body.replace(quote_plus(token), "<redacted>").replace(token, "<redacted>")
    click.echo("")
    click.echo(body)


# --------------------------------------------------------------------------- deliveries


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
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
def _state(config: Config) -> Iterator[Store]:
    """The existing state file, unlocked: a running daemon holds the lock, and SQLite's WAL
    lets a second connection read and make small writes beside it."""
    path = config.state.path
    if not path.exists():
        _fail(f"error: no state file at {str(path)!r} (has the watcher run yet?)", EXIT_REGISTRY)
    with Store.open(path, lock=False) as store:
        yield store


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _last_outcome(row: DeliveryRow) -> str:
    if row.last_error:
        return _clip(row.last_error, 48)
    if row.last_status_code is not None:
        return str(row.last_status_code)
    return "-"


def _table(rows: list[DeliveryRow], now: float) -> list[str]:
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
            _age(now - row.created_at),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


@cli.command(epilog=EXIT_STATUSES)
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
    callback=_duration,
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
    config = _load(config_path, credentials=False)
    now = time.time()
    with _state(config) as store:
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


@cli.command(epilog=EXIT_STATUSES)
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
    callback=_duration,
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
        _fail(
            "usage error: say what to redeliver: delivery IDs, --dead, --webhook or --since",
            EXIT_USAGE,
        )
    short = [i for i in ids if len(i.strip()) < MIN_ID_PREFIX]
    if short:
        _fail(
            f"usage error: give at least {MIN_ID_PREFIX} characters of a delivery id: "
            + ", ".join(short),
            EXIT_USAGE,
        )
    config = _load(config_path, credentials=False)
    with _state(config) as store:
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


@cli.command(epilog=EXIT_STATUSES)
@config_option
@click.option("--dead", is_flag=True, help="Required: only dead deliveries are ever purged.")
@click.option(
    "--older-than",
    callback=_duration,
    required=True,
    metavar="DURATION",
    help="Only those dead for longer than this, e.g. 30d.",
)
def purge(config_path: str | None, dead: bool, older_than: float) -> None:
    """Delete dead deliveries, and their attempts, from the state file for good."""
    if not dead:
        _fail(
            "usage error: purge deletes dead deliveries only; say so with --dead",
            EXIT_USAGE,
        )
    config = _load(config_path, credentials=False)
    with _state(config) as store:
        count = store.purge(older_than=older_than, now=time.time())
    click.echo(f"purged {count} dead deliveries")


# --------------------------------------------------------------------------- status, healthcheck


def _status(config: Config, store: Store, now: float) -> dict[str, Any]:
    from watcher.metrics import parse_meta_float, parse_meta_time

    meta = store.all_meta()
    summary = store.summary()
    webhooks = sorted({*(w.name for w in config.webhooks), *summary.counts})
    by_webhook = {
        name: {
            status: summary.counts.get(name, {}).get(status, 0)
            for status in (PENDING, DEAD, DELIVERED)
        }
        for name in webhooks
    }
    duration = meta.get("last_poll_duration_ms")
    oldest = summary.oldest_pending

    def number(key: str) -> int | None:
        value = meta.get(key)
        return int(value) if value and value.isdigit() else None

    return {
        "state": str(store.path),
        "registry": meta.get("registry"),
        "last_poll": {
            "at": meta.get("last_poll_at"),
            "result": meta.get("last_poll_result"),
            "duration_ms": int(duration) if duration and duration.isdigit() else None,
            "error": meta.get("last_poll_error") or None,
            "last_ok_at": meta.get("last_poll_ok_at"),
            "age_s": _seconds_since(parse_meta_time(meta.get("last_poll_at")), now),
        },
        "models": number("models"),
        "versions": number("versions"),
        "scans": {
            scan: {
                "every_s": parse_meta_float(meta.get(f"{scan}_scan_every_s")),
                "took_s": parse_meta_float(meta.get(f"{scan}_scan_took_s")),
            }
            for scan in ("models", "versions")
        },
        "baseline_at": meta.get("baseline_at"),
        "deliveries": by_webhook,
        "pending": summary.total(PENDING),
        "dead": summary.total(DEAD),
        "oldest_pending": {
            "queued_at": None if oldest is None else _iso(oldest),
            "age_s": _seconds_since(oldest, now),
            "by_webhook": {
                name: _iso(at) for name, at in sorted(summary.oldest_pending_by_webhook.items())
            },
        },
    }


def _seconds_since(at: float | None, now: float) -> int | None:
    return None if at is None else max(0, round(now - at))


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _status_lines(status: dict[str, Any]) -> list[str]:
    poll = status["last_poll"]
    lines = [f"state:          {status['state']}", f"registry:       {status['registry'] or '-'}"]
    if poll["at"] is None:
        lines.append("last poll:      none yet")
    else:
        took = f" in {poll['duration_ms']} ms" if poll["duration_ms"] is not None else ""
        ago = f" ({_age(poll['age_s'])} ago)" if poll["age_s"] is not None else ""
        lines.append(f"last poll:      {poll['at']}{ago}, {poll['result']}{took}")
        if poll["result"] != "ok":
            lines.append(f"  error:        {poll['error'] or '-'}")
            lines.append(f"  last success: {poll['last_ok_at'] or 'never'}")
    if status["models"] is not None:
        lines.append(
            f"tracking:       {status['models']} models, {status['versions']} versions "
            f"(baseline {status['baseline_at'] or '-'})"
        )
    scans = [
        f"{scan} every {_age(round(s['every_s']))}"
        + (f" (last took {s['took_s']:.1f} s)" if s["took_s"] is not None else "")
        for scan, s in status["scans"].items()
        if s["every_s"] is not None
    ]
    if scans:
        lines.append("full scans:     " + ", ".join(scans))
    oldest = status["oldest_pending"]
    lines.append(
        f"deliveries:     {status['pending']} pending, {status['dead']} dead"
        + (f"; oldest pending {_age(oldest['age_s'])} old" if oldest["age_s"] is not None else "")
    )
    if status["deliveries"]:
        header = ("WEBHOOK", PENDING.upper(), DEAD.upper(), DELIVERED.upper())
        rows = [header] + [
            (name, str(c[PENDING]), str(c[DEAD]), str(c[DELIVERED]))
            for name, c in status["deliveries"].items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
    return lines


@cli.command(epilog=EXIT_STATUSES)
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(config_path: str | None, as_json: bool) -> None:
    """Show the last poll, what is tracked and the outbox, from the state file.

    Safe beside a running daemon: the state is read without taking its lock. DELIVERED counts
    rows kept for delivery.retention.
    """
    config = _load(config_path, credentials=False)
    with _state(config) as store:
        report = _status(config, store, time.time())
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in _status_lines(report):
            click.echo(line)


@cli.command(epilog="Exit 0 when the answer is 200, 1 otherwise (or 2 on a usage error).")
@config_option
@click.option(
    "--url",
    metavar="URL",
    help="What to probe. Default: /readyz (or /healthz with --live) at [server] listen.",
)
@click.option("--live", is_flag=True, help="Probe liveness (/healthz) instead of readiness.")
@click.option(
    "--timeout",
    callback=_duration,
    default="5s",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for the answer.",
)
def healthcheck(config_path: str | None, url: str | None, live: bool, timeout: float) -> None:
    """Probe a running watcher's health server, for Docker's HEALTHCHECK and scripts."""
    import urllib.error
    import urllib.request

    if url is None:
        config = _load(config_path, credentials=False)
        if config.server.listen is None:
            _fail(
                "usage error: no [server] listen configured (WATCHER_SERVER__LISTEN); "
                "or give --url",
                EXIT_USAGE,
            )
        assert config.server.listen is not None
        host, port = config.server.listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/{'healthz' if live else 'readyz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
            body = answer.read(512).decode("utf-8", "replace").strip()
            code = int(answer.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(512).decode("utf-8", "replace").strip()
        code = exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(f"unhealthy: {url}: {reason}", EXIT_REGISTRY)
    if code != 200:
        _fail(f"unhealthy: {url}: HTTP {code}: {_clip(body, 200)}", EXIT_REGISTRY)
    click.echo(f"{url}: {body or 'ok'}")


# --------------------------------------------------------------------------- receive


@cli.command(epilog="Answers 401 to a delivery whose signature does not verify.")
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
        _fail("usage error: give only one of --secret-env and --secret-file", EXIT_USAGE)
    if secret_env:
        secret = os.environ.get(secret_env)
        if not secret:
            _fail(
                f"--secret-env: environment variable {secret_env} is not set or empty", EXIT_USAGE
            )
    elif secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            _fail(f"--secret-file: cannot read {secret_file!r}: {exc.strerror}", EXIT_USAGE)
    try:
        receiver = Receiver(host, port, secret=secret, as_json=as_json, status=status)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_REGISTRY)
    bound_host, bound_port = receiver.address
    checking = "verifying signatures" if secret else "NOT verifying signatures (no secret given)"
    click.echo(f"listening on http://{bound_host}:{bound_port}/ ({checking})", err=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.shutdown()


# --------------------------------------------------------------------------- entry point


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mlflow-watcher: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"mlflow-watcher: config error: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    except WatcherError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("WATCHER_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set WATCHER_DEBUG=1 for a traceback)",
            EXIT_REGISTRY,
        )
