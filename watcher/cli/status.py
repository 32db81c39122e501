"""`status` and `healthcheck`: how a watcher is doing, from its state file or its health server.

The status itself is built in watcher.status; this module renders it."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from watcher.cli.common import EXIT_STATUSES, config_option, duration_value, fail, load, open_state
from watcher.cli.text import age, clip, table
from watcher.errors import ExitCode
from watcher.status import status_report
from watcher.store import DEAD, DELIVERED, PENDING


def _status_lines(status: dict[str, Any]) -> list[str]:
    """The status for a person: one fact a line, the outbox as a table by webhook."""
    poll = status["last_poll"]
    lines = [f"state:          {status['state']}"]
    if status["lease"] is not None:
        lines.append(f"leader:         {_leader_text(status['lease'])}")
    lines.append(f"registry:       {status['registry'] or '-'}")
    if poll["at"] is None:
        lines.append("last poll:      none yet")
    else:
        took = f" in {poll['duration_ms']} ms" if poll["duration_ms"] is not None else ""
        ago = f" ({age(poll['age_s'])} ago)" if poll["age_s"] is not None else ""
        lines.append(f"last poll:      {poll['at']}{ago}, {poll['result']}{took}")
        if poll["result"] != "ok":
            lines.append(f"  error:        {poll['error'] or '-'}")
            lines.append(f"  last success: {poll['last_ok_at'] or 'never'}")
    if status["models"] is not None:
        lines.append(
            f"tracking:       {status['models']} models, {status['versions']} versions"
            + (
                f", {status['prompts']} prompts ({status['prompt_versions']} versions)"
                if status.get("prompts")
                else ""
            )
            + f" (baseline {status['baseline_at'] or '-'})"
        )
    scans = [
        f"{scan} every {age(round(s['every_s']))}"
        + (f" (last took {s['took_s']:.1f} s)" if s["took_s"] is not None else "")
        for scan, s in status["scans"].items()
        if s["every_s"] is not None
    ]
    if scans:
        lines.append("scans:          " + ", ".join(scans))
    hot = status.get("hot") or {}
    if hot.get("models"):
        lines.append(
            f"hot set:        {hot['models']} models active lately, each read every "
            f"{age(round(hot['round_s'] or 0))}"
        )
    if status["hints"]["on"] or status["hints"]["last_accepted_at"] is not None:
        lines.append(f"hints:          {_hints_text(status['hints'])}")
    oldest = status["oldest_pending"]
    lines.append(
        f"deliveries:     {status['pending']} pending, {status['dead']} dead"
        + (f"; oldest pending {age(oldest['age_s'])} old" if oldest["age_s"] is not None else "")
    )
    if status["deliveries"]:
        header = ("WEBHOOK", PENDING.upper(), DEAD.upper(), DELIVERED.upper())
        rows = [header] + [
            (name, str(c[PENDING]), str(c[DEAD]), str(c[DELIVERED]))
            for name, c in status["deliveries"].items()
        ]
        lines += table(rows, indent="  ")
    return lines


def _hints_text(hints: dict[str, Any]) -> str:
    """Whether MLflow's native webhooks arrive: the last accepted, and the counts since the
    daemon started."""
    where = f"on at {hints['path']}" if hints["on"] else "off"
    if hints["last_accepted_at"] is None:
        last = "none accepted yet"
    else:
        last = f"last accepted {hints['last_accepted_at']} ({age(hints['age_s'])} ago)"
    counts = ", ".join(f"{n} {result}" for result, n in hints["counts"].items())
    return f"{where}; {last}; {counts}"


def _leader_text(lease: dict[str, Any]) -> str:
    """Who leads a shared state, as the database records it, and how often it changed hands."""
    takeovers = f"{lease['takeovers']} takeover{'' if lease['takeovers'] == 1 else 's'}"
    if lease["leader"] is None:
        last = f", last epoch {lease['epoch']}" if lease["epoch"] else ""
        return f"none (no replica holds the lease{last}); {takeovers}"
    return (
        f"{lease['leader']} (epoch {lease['epoch']}) since {lease['acquired_at']}, "
        f"lease until {lease['expires_at']}; {takeovers}"
    )


@click.command(epilog=EXIT_STATUSES)
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(config_path: str | None, as_json: bool) -> None:
    """Show the last poll, what is tracked and the outbox, from the state.

    Safe beside a running daemon: the state is read without taking its lock. DELIVERED counts
    rows kept for delivery.retention. On a shared (PostgreSQL) state, also who leads, as the
    database records the lease.
    """
    config = load(config_path, credentials=False)
    with open_state(config) as store:
        report = status_report(config, store, time.time())
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in _status_lines(report):
            click.echo(line)


@click.command(epilog="Exit 0 when the answer is 200, 1 otherwise (or 2 on a usage error).")
@config_option
@click.option(
    "--url",
    metavar="URL",
    help="What to probe. Default: /readyz (or /healthz with --live) at [server] listen.",
)
@click.option("--live", is_flag=True, help="Probe liveness (/healthz) instead of readiness.")
@click.option(
    "--timeout",
    callback=duration_value,
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
        config = load(config_path, credentials=False)
        if config.server.listen is None:
            fail(
                "usage error: no [server] listen configured (WATCHER_SERVER__LISTEN); "
                "or give --url",
                ExitCode.USAGE,
            )
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
        fail(f"unhealthy: {url}: {reason}", ExitCode.FAILED)
    if code != 200:
        fail(f"unhealthy: {url}: HTTP {code}: {clip(body, 200)}", ExitCode.FAILED)
    click.echo(f"{url}: {body or 'ok'}")
